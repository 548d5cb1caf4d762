"""Fixtures shared by several test files."""

import subprocess

import pytest

from gemkr.paths import REPO_ROOT


@pytest.fixture(scope="session")
def smoke_stages():
    """``smoke_stages("01", "02", ...)`` runs those notebooks of the `smoke` profile through
    ``run_all.sh --only`` (a no-op for the stages already up to date; ~2 min from nothing), for
    tests that need the smoke models on disk."""

    def run(*notebooks: str) -> None:
        for nb in notebooks:
            proc = subprocess.run(["./run_all.sh", "--profile", "smoke", "--only", nb],
                                  cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    return run
