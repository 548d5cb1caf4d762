"""run_all.sh end to end in the `smoke` profile (issue 17): finished notebooks are skipped by their
stamps, --from selects, and a run killed in the middle of GeMKR's training (notebook 04) resumes
from the stage caches and the epoch checkpoint, and ends with the same tables as an uninterrupted
run (bitwise: the epoch checkpoint holds the torch RNG state LoRA dropout draws from). Slow (a few
minutes): it reruns notebooks 04-09."""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from gemkr.config import get_config
from gemkr.io import output_noise
from gemkr.paths import REPO_ROOT

# tables that hold no timings: equal, byte for byte, whatever the interruption
TABLES = ("04_val_clues.csv", "04_reading_probe.csv", "05_main_results.csv", "05_by_ref_kind.csv",
          "06_ablation_intervals.csv", "07_top_keywords.csv", "08_cases.csv", "09_your_data.csv")
RESULTS = REPO_ROOT / "results" / "smoke"
ART = REPO_ROOT / "artifacts" / "smoke"


def _run_all(*args, check=True):
    proc = subprocess.run(["./run_all.sh", "--profile", "smoke", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _hashes():
    return {t: hashlib.sha256((RESULTS / t).read_bytes()).hexdigest() for t in TABLES}


def _forget_gemkr():
    """GeMKR has to train again in 04: its cache and the stamps of 04-09 go."""
    subprocess.run(["rm", "-rf", str(ART / "04_training" / "gemkr-full")], check=True)
    for nb in ("04_training", "05_evaluation", "06_ablations", "07_modality_keywords",
               "08_case_studies", "09_your_data"):
        (ART / "_stamps" / f"{nb}.stamp").unlink(missing_ok=True)


@pytest.mark.slow
def test_stamps_from_and_a_killed_run_that_resumes():
    _run_all()  # complete (a no-op when everything is up to date)
    dry = _run_all("--dry-run").stdout
    assert dry.count("up to date, skipped") == 9, dry
    dry_from = _run_all("--from", "07", "--dry-run", "--force").stdout
    assert [line.split(":")[0] for line in dry_from.splitlines() if line.startswith("== ")] == \
        ["== 07_modality_keywords", "== 08_case_studies", "== 09_your_data"]

    _forget_gemkr()  # the reference: GeMKR trained without interruption
    _run_all()
    baseline = _hashes()
    weights = ART / "04_training" / "gemkr-full" / "trainable.safetensors"
    baseline_weights = hashlib.sha256(weights.read_bytes()).hexdigest()

    _forget_gemkr()  # again, killed once its first epoch is checkpointed
    proc = subprocess.Popen(["./run_all.sh", "--profile", "smoke"], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpts = ART / "04_training" / "_ckpt"
    deadline = time.time() + 900
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        states = list(ckpts.glob("gemkr-full-*/state.json")) if ckpts.exists() else []
        if states:
            # a crash, not a polite ^C: the whole tree, the kernel (in its own session) included
            tree = psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            for child in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            killed_at = json.loads(states[0].read_text())["epoch"]
            break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None, "the run ended before GeMKR's first checkpoint"
    time.sleep(1)
    killed_at = json.loads(states[0].read_text())["epoch"]
    assert not (ART / "04_training" / "gemkr-full").exists(), "killed before the end"
    assert killed_at < get_config("smoke").epochs, "some training is left to resume"
    assert not (ART / "_stamps" / "04_training.stamp").exists(), "a half-run notebook is not done"

    resumed = _run_all().stdout
    for name in ("01_data_prep", "02_detection", "03_index"):
        assert f"== {name}: up to date, skipped" in resumed
    run = json.loads((ART / "04_training" / "gemkr-full" / "run.json").read_text())
    assert run["resumed_from_epoch"] == killed_at >= 1, "training went on from the checkpoint"
    differ = sorted(t for t, h in _hashes().items() if h != baseline[t])
    if hashlib.sha256(weights.read_bytes()).hexdigest() != baseline_weights:
        differ.append("GeMKR's trained weights")
    assert not differ, f"the resumed run differs from the uninterrupted one in {differ}"
    # what the run left for a reader: executed copies without widgets, escapes or reprs
    noisy = {p.stem: output_noise(p) for p in sorted((RESULTS / "executed").glob("*.ipynb"))}
    assert len(noisy) == 9 and not any(noisy.values()), noisy
