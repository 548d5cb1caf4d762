"""Which notebooks a notebook needs, and a one-sentence error when they have not run.

`gemkr.setup` calls `check` first thing: a learner who opens notebook 05 before running 01-04 reads
"Notebook 05_evaluation needs notebooks 01_data_prep, ... of profile 'smoke' ..." instead of a
traceback from deep inside the package. In Jupyter the error shows as that one sentence (an IPython
handler for `MissingPrerequisite`); papermill and run_all.sh still see a failed cell.
"""

from __future__ import annotations

import sys

from .paths import REPO_ROOT

# notebook -> the notebooks whose artifacts it reads (README's "reads" column)
NEEDS: dict[str, tuple[str, ...]] = {
    "01_data_prep": (),
    "02_detection": ("01_data_prep",),
    "03_index": ("01_data_prep",),
    "04_training": ("01_data_prep", "02_detection", "03_index"),
    "05_evaluation": ("01_data_prep", "02_detection", "03_index", "04_training"),
    "06_ablations": ("01_data_prep", "02_detection", "03_index", "04_training"),
    "07_modality_keywords": ("06_ablations",),
    "08_case_studies": ("01_data_prep", "02_detection", "03_index", "04_training"),
    "09_your_data": ("01_data_prep", "02_detection", "03_index", "04_training"),
}
# what a finished notebook leaves in artifacts/<profile>/<notebook>/ (None: anything)
MARKERS: dict[str, str | None] = {
    "01_data_prep": "benchmark",
    "02_detection": "detections.parquet",
    "03_index": None,
    "04_training": "gemkr-full",
    "06_ablations": "clues.parquet",
}


class MissingPrerequisite(RuntimeError):
    """An earlier notebook this one reads has not run for this profile."""


def missing(stage: str, profile: str) -> list[str]:
    """The notebooks `stage` needs that have left no artifacts for `profile`."""
    out = []
    for need in NEEDS.get(stage, ()):
        folder = REPO_ROOT / "artifacts" / profile / need
        marker = MARKERS.get(need)
        done = (folder / marker).exists() if marker else folder.is_dir() and any(
            p for p in folder.iterdir() if not p.name.startswith("."))
        if not done:
            out.append(need)
    return out


def _show_briefly() -> None:
    """In IPython, print a MissingPrerequisite as its sentence, without the traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(shell, etype, value, tb, tb_offset=None):
        print(f"{etype.__name__}: {value}", file=sys.stderr)
        return [f"{etype.__name__}: {value}"]

    shell.set_custom_exc((MissingPrerequisite,), handler)


def check(stage: str, profile: str) -> None:
    """Raise `MissingPrerequisite` naming the notebooks to run first, if any."""
    gone = missing(stage, profile)
    if gone:
        _show_briefly()
        first = gone[0][:2]
        raise MissingPrerequisite(
            f"Notebook {stage} needs notebook(s) {', '.join(gone)} of profile {profile!r} to "
            f"have run first: open and run them in order, or run ./run_all.sh --profile "
            f"{profile} --from {first} (it stops after the last notebook; stamps skip what is "
            "done).")
