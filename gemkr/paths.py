"""Absolute paths derived from the package location, so notebooks never build path strings.

Layout (DESIGN §2): ``artifacts/<profile>/NN_stage/`` (cache, gitignored), ``results/<profile>/``
(tables, executed notebooks, manifest) and ``figures/<profile>/`` (PNG + PDF).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The stages in run order; the number prefixes every output of the stage.
STAGES = {
    "01_data_prep": "notebook 01_data_prep.ipynb",
    "02_detection": "notebook 02_detection.ipynb",
    "03_index": "notebook 03_index.ipynb",
    "04_training": "notebook 04_training.ipynb",
    "05_evaluation": "notebook 05_evaluation.ipynb",
    "06_ablations": "notebook 06_ablations.ipynb",
    "07_modality_keywords": "notebook 07_modality_keywords.ipynb",
    "08_case_studies": "notebook 08_case_studies.ipynb",
    "09_your_data": "notebook 09_your_data.ipynb",
}


def rel(path: str | Path) -> str:
    """`path` relative to the repository when inside it (for printing: no absolute paths leak
    into executed notebooks or logs)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(profile: str) -> Path:
    """``results/<profile>/``: CSV tables, JSON metrics, executed notebooks, manifest."""
    return _made(REPO_ROOT / "results" / profile)


def figures_dir(profile: str) -> Path:
    """``figures/<profile>/``: one PNG and one PDF per figure."""
    return _made(REPO_ROOT / "figures" / profile)


def artifacts_dir(profile: str, stage: str) -> Path:
    """``artifacts/<profile>/<stage>/``: cached intermediate artifacts of one stage."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return _made(REPO_ROOT / "artifacts" / profile / stage)


def user_kb_dir(profile: str) -> Path:
    """``artifacts/<profile>/kb/``: indexes of knowledge bases of one's own (`gemkr.kb`)."""
    return _made(REPO_ROOT / "artifacts" / profile / "kb")


def logs_dir(profile: str) -> Path:
    """``logs/<profile>/``: one papermill log per notebook run by run_all.sh."""
    return _made(REPO_ROOT / "logs" / profile)
