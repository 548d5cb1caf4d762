"""A notebook opened before the ones it reads says so in one sentence (issue 16)."""

import pytest

from gemkr import paths, prerequisites
from gemkr.prerequisites import MissingPrerequisite, check, missing


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setattr(prerequisites, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    return tmp_path


def _done(repo, profile, stage, marker):
    folder = repo / "artifacts" / profile / stage
    folder.mkdir(parents=True, exist_ok=True)
    if marker:
        (folder / marker).mkdir()
    else:
        (folder / "something").write_text("x")


def test_every_notebook_is_covered_and_needs_only_earlier_ones():
    from gemkr.notebooks import NOTEBOOKS

    assert set(prerequisites.NEEDS) == set(NOTEBOOKS)
    for stage, needs in prerequisites.NEEDS.items():
        assert all(n < stage for n in needs), stage
        assert all(n in prerequisites.MARKERS for n in needs), "each needed notebook has a marker"


def test_missing_names_exactly_what_has_not_run(repo):
    assert missing("01_data_prep", "smoke") == []
    assert missing("05_evaluation", "smoke") == ["01_data_prep", "02_detection", "03_index",
                                                 "04_training"]
    _done(repo, "smoke", "01_data_prep", "benchmark")
    _done(repo, "smoke", "02_detection", "detections.parquet")
    (repo / "artifacts" / "smoke" / "03_index").mkdir()  # an empty folder is not a run
    assert missing("05_evaluation", "smoke") == ["03_index", "04_training"]
    _done(repo, "smoke", "03_index", None)
    _done(repo, "smoke", "04_training", "gemkr-full")
    assert missing("05_evaluation", "smoke") == []
    assert missing("05_evaluation", "default") != [], "profiles are separate"


def test_check_raises_one_sentence_naming_the_command(repo):
    with pytest.raises(MissingPrerequisite) as err:
        check("07_modality_keywords", "smoke")
    msg = str(err.value)
    assert "06_ablations" in msg and "./run_all.sh --profile smoke --from 06" in msg
    assert "\n" not in msg


def test_setup_checks_before_anything_else(repo):
    import gemkr

    with pytest.raises(MissingPrerequisite, match="01_data_prep"):
        gemkr.setup(stage="02_detection", profile="smoke", quiet=True)
    assert not (repo / "artifacts" / "smoke" / "02_detection").exists(), "nothing was created"
