"""Static checks of the committed notebooks (style guide §2-§5, §8): no kernel needed."""

import json
import re
from pathlib import Path

import pytest

from gemkr import notebooks

ROOT = Path(__file__).resolve().parent.parent
PATHS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FORBIDDEN = [
    r"%pip",
    r"!pip",
    r"%cd\b",
    r"sys\.path",
    r"%run\b",
    r"torch\.compile",
    r"cuda:0",
    r"\.half\(\)",
    r"requests\.",
    r"urllib",
    r"from_pretrained\(['\"][\w.-]+/[\w.-]+['\"]",
    r"open\([^)]*['\"]w",
    r"['\"]/(root|home|tmp|work)/",
]


def test_notebook_set_matches_run_order():
    names = [p.stem for p in PATHS]
    assert names == list(notebooks.NOTEBOOKS)
    run_all = (ROOT / "run_all.sh").read_text()
    listed = re.search(r"NOTEBOOKS=\(([^)]*)\)", run_all).group(1).split()
    assert listed == names, "run_all.sh lists every notebook, in order"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_anatomy(path):
    assert re.match(r"^\d{2}[a-z]?_[a-z0-9_]+\.ipynb$", path.name)
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown"
    assert notebooks.source(cells[0]).startswith(f"# {path.name[:2]} ·"), "title first"
    assert "parameters" in cells[1]["metadata"].get("tags", []), "parameters right after title"
    params = notebooks.read_parameters(path)
    assert list(params)[:4] == ["PROFILE", "SEED", "DEVICE", "FORCE"]
    assert params["PROFILE"].default == "smoke" and params["SEED"].default == 0
    md = [notebooks.source(c) for c in cells if c["cell_type"] == "markdown"]
    heads = [ln for m in md for ln in m.splitlines() if ln.startswith("## ")]
    for needed in ("## Save outputs", "## Checks", "## Summary"):
        assert needed in heads, f"{path.name} lacks a '{needed}' section"
    assert heads.index("## Checks") < heads.index("## Summary")
    code = [c for c in cells if c["cell_type"] == "code"]
    assert f'stage="{path.stem}"' in notebooks.source(code[1]), "setup cell calls gemkr.setup"
    for c in code:
        assert not c.get("outputs") and c.get("execution_count") is None, "committed stripped"
        src = notebooks.source(c)
        for pat in FORBIDDEN:
            assert not re.search(pat, src), f"{path.name}: forbidden pattern {pat!r} in:\n{src}"
        assert len(src.splitlines()) <= 30, f"{path.name}: a code cell over 30 lines"
    checks = cells[
        [i for i, c in enumerate(cells) if notebooks.source(c).startswith("## Checks")][0] + 1
    ]
    assert "assert" in notebooks.source(checks), "## Checks is followed by asserts"
    # teaching balance: prose at least 1.2x the code cells, short code cells
    assert len(md) >= 1.2 * len(code), f"{path.name}: {len(md)} markdown / {len(code)} code cells"
    lines = sorted(sum(1 for ln in notebooks.source(c).splitlines() if ln.strip()) for c in code)
    median = (lines[(len(lines) - 1) // 2] + lines[len(lines) // 2]) / 2
    assert median <= 10, f"{path.name}: median code cell of {median} lines"
    # it ends with exercises, each saying what the learner should see
    assert md[-1].startswith("## Exercises"), f"{path.name}: last cell is not '## Exercises'"
    items = re.split(r"\n(?=\d+\. )", md[-1].split("\n", 1)[1].strip())
    assert len(items) >= 2 and all("*What you should see:*" in it for it in items), \
        f"{path.name}: an exercise without its 'What you should see'"
    # nothing the repository does not hold is referenced
    for m in md:
        assert not re.search(r"paper-notes|DESIGN\.md|DESIGN §|issue \d+", m), \
            f"{path.name}: a reference to a file or issue the repository does not hold"
