"""The run records say what happened (issue 17, point 6): `manifest.json` keeps one row per
notebook whose results are current, says which run made it, on which hardware, and whether that
run was cold; stale rows and `outputs.json` entries of deleted files are dropped; `--force` passes
FORCE=True so notebooks rebuild their caches."""

import importlib.util
import json
import subprocess
import sys

import pytest

from gemkr.paths import REPO_ROOT


@pytest.fixture
def run_all(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all_driver",
                                                  REPO_ROOT / "tools" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    (tmp_path / "artifacts" / "p" / "_stamps").mkdir(parents=True)
    (tmp_path / "results" / "p").mkdir(parents=True)
    return mod


def _run(started, cold, commit="c1"):
    return {"started": started, "command": "./run_all.sh",
            "git": {"commit": commit, "dirty": False},
            "cold": cold, "seed": 0, "hardware": {"bf16_native": True}, "python": "3.11"}


def _stamp(root, name, key):
    (root / "artifacts" / "p" / "_stamps" / f"{name}.stamp").write_text(key + "\n")


def _ok(wall):
    return {"status": "ok", "wall_s": wall, "executed": "x", "log": "y"}


def test_a_cold_run_of_every_notebook_is_one_cold_run(run_all, tmp_path):
    keys = {"01_a": "k1", "02_b": "k2"}
    for n, k in keys.items():
        _stamp(tmp_path, n, k)
    m = json.loads(run_all.write_manifest("p", {n: _ok(1.0) for n in keys}, _run("t1", True),
                                          keys).read_text())
    assert m["one_cold_run"] and m["run"]["cold"] and m["run"]["hardware"]["bf16_native"]
    assert {r["run"] for r in m["notebooks"].values()} == {"t1"}


def test_a_partial_rerun_keeps_current_rows_and_drops_stale_ones(run_all, tmp_path):
    keys = {"01_a": "k1", "02_b": "k2", "03_c": "k3"}
    for n, k in keys.items():
        _stamp(tmp_path, n, k)
    rows = {n: _ok(1.0) for n in keys}
    run_all.write_manifest("p", {**rows, "99_gone": _ok(1.0)}, _run("t1", True), keys)
    # later: 02 reruns from other code; 03's stamp no longer matches (stale), 01 is skipped
    _stamp(tmp_path, "03_c", "old")
    m = json.loads(run_all.write_manifest(
        "p", {"01_a": {"status": "skipped", "wall_s": 0.0}, "02_b": _ok(2.0)},
        _run("t2", False, "c2"), keys).read_text())
    assert set(m["notebooks"]) == {"01_a", "02_b"}, "stale 03 and the unknown notebook dropped"
    assert m["notebooks"]["01_a"]["run"] == "t1" and m["notebooks"]["01_a"]["commit"] == "c1"
    assert m["notebooks"]["02_b"]["run"] == "t2" and m["notebooks"]["02_b"]["wall_s"] == 2.0
    assert m["one_cold_run"] is False and m["run"]["command"] == "./run_all.sh"


def test_a_warm_run_is_not_called_cold(run_all, tmp_path):
    (tmp_path / "artifacts" / "p" / "01_a").mkdir()
    assert not run_all.is_cold("p")
    keys = {"01_a": "k1"}
    _stamp(tmp_path, "01_a", "k1")
    m = json.loads(run_all.write_manifest("p", {"01_a": _ok(1.0)}, _run("t1", False),
                                          keys).read_text())
    assert m["one_cold_run"] is False


def test_outputs_of_a_rerun_stage_and_of_deleted_files_are_dropped(run_all, tmp_path):
    for f in ("results/p/05_x.csv", "results/p/06_y.csv"):
        (tmp_path / f).write_text("a\n")
    index = tmp_path / "results" / "p" / "outputs.json"
    index.write_text(json.dumps({"results/p/05_x.csv": {"stage": "05"},
                                 "results/p/06_y.csv": {"stage": "06"},
                                 "results/p/04_deleted.csv": {"stage": "04"}}))
    run_all.drop_outputs("p")
    assert set(json.loads(index.read_text())) == {"results/p/05_x.csv", "results/p/06_y.csv"}
    run_all.drop_outputs("p", "05")
    assert set(json.loads(index.read_text())) == {"results/p/06_y.csv"}


def test_force_passes_FORCE_to_every_notebook():
    out = subprocess.run([sys.executable, "tools/run_all.py", "--profile", "smoke", "--force",
                          "--dry-run"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("== ")]
    assert lines and all('"FORCE": true' in ln for ln in lines), lines


def test_the_banner_ignores_what_the_run_writes(tmp_path, monkeypatch):
    """A run rewrites tracked tables under results/ and figures/: the banner of its next notebook
    must not call the code dirty; an edited source file must."""
    import subprocess

    from gemkr import paths, session

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for f in ("results/default/t.csv", "figures/default/f.png", "gemkr/x.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("0")
    git("add", ".")
    git("-c", "user.email=k@kit", "-c", "user.name=kit", "commit", "-qm", "init")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    assert session.source_dirty() is False
    (tmp_path / "results/default/t.csv").write_text("1")
    (tmp_path / "figures/default/f.png").write_text("1")
    assert session.source_dirty() is False
    (tmp_path / "gemkr/x.py").write_text("1")
    assert session.source_dirty() is True
