"""The README's numbers are rendered from the committed `default` tables
(tools/readme_numbers.py): a table that changes without the README, or a number typed into the
generated section by hand, fails here."""

import subprocess
import sys

from gemkr.paths import REPO_ROOT


def test_readme_numbers_match_the_committed_tables():
    proc = subprocess.run([sys.executable, "tools/readme_numbers.py", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_generated_section_is_in_the_readme():
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count("<!-- BEGIN numbers:") == 1 and text.count("<!-- END numbers -->") == 1
