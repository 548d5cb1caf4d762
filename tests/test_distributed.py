"""Several processes, one result (issue 27): `train.fit` under torchrun with 2 CPU processes
(gloo) ends with the weights of one process with the same global batch, writes checkpoints from
the main process only and resumes from them; the evaluation helpers share batches out and
gather them back in order."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from gemkr import distributed
from gemkr.paths import REPO_ROOT

SCRIPT = str(REPO_ROOT / "tests" / "helpers" / "fit_processes.py")
SMOKE = str(REPO_ROOT / "tests" / "helpers" / "smoke_processes.py")
# float tolerance: the 2-process run adds the same per-micro-batch gradients in another order
ATOL = 1e-6
# the smoke GeMKR's tuning (bfloat16 autocast where native): the same micro-batch gradients,
# summed by an all-reduce instead of in place, over every optimizer step
SMOKE_ATOL = 1e-5


def _run(out, processes: int, *extra, expect: int = 0, script: str = SCRIPT):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = ([sys.executable, script] if processes == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", "29531", script])
    proc = subprocess.run([*cmd, str(out), *extra], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _weights(path):
    return load_file(str(path)), json.loads(open(str(path) + ".json").read())


@pytest.mark.parametrize("grad_accum", [2, 4])
def test_two_processes_train_the_weights_of_one(tmp_path, grad_accum):
    _run(tmp_path / "one.safetensors", 1, "--grad-accum", str(grad_accum))
    _run(tmp_path / "two.safetensors", 2, "--grad-accum", str(grad_accum))
    one, one_info = _weights(tmp_path / "one.safetensors")
    two, two_info = _weights(tmp_path / "two.safetensors")
    assert one_info["processes"] == 1 and two_info["processes"] == 2
    assert set(one) == set(two)
    for k in one:
        assert torch.allclose(one[k], two[k], atol=ATOL, rtol=0), k
    steps = -(-7 // grad_accum)  # optimizer steps per epoch: one loss each
    assert len(two_info["history"]) == len(one_info["history"]) == 3 * steps
    assert two_info["history"] == pytest.approx(one_info["history"], abs=1e-5)


def test_grad_accum_must_be_shared_evenly(tmp_path):
    proc = _run(tmp_path / "x.safetensors", 2, "--grad-accum", "3", expect=1)
    assert "not a multiple of the 2 processes" in proc.stderr


def test_two_processes_checkpoint_once_and_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    _run(tmp_path / "whole.safetensors", 2, "--ckpt", str(tmp_path / "ckpt_whole"))
    _run(tmp_path / "cut.safetensors", 2, "--ckpt", str(ckpt), "--crash-after-epoch", "2",
         expect=1)
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2 * 4  # 7 micro-batches, 4 steps
    assert sorted(p.name for p in ckpt.iterdir()) == ["optimizer.pt", "state.json",
                                                      "trainable.safetensors"]
    _run(tmp_path / "resumed.safetensors", 2, "--ckpt", str(ckpt))
    whole, _ = _weights(tmp_path / "whole.safetensors")
    resumed, info = _weights(tmp_path / "resumed.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert len(info["history"]) == 3 * 4


def test_one_process_helpers_are_the_identity():
    assert distributed.world() == (1, 0) and distributed.is_main()
    assert distributed.share(range(5)) == [0, 1, 2, 3, 4]
    assert distributed.in_batches(lambda a, b: list(range(a, b)), 10, 3) == list(range(10))


def test_per_process_keeps_the_global_batch(monkeypatch):
    assert distributed.per_process(16, 1) == (16, 1)  # one process: the config's own
    for n, (batch, accum), want in [(2, (16, 1), (8, 2)), (2, (12, 2), (12, 2)),
                                    (4, (12, 2), (6, 4)), (3, (12, 1), (4, 3))]:
        monkeypatch.setattr(distributed, "batch_processes", lambda n=n: n)
        got = distributed.per_process(batch, accum)
        assert got == want and got[0] * got[1] == batch * accum and got[1] % n == 0
    monkeypatch.setattr(distributed, "batch_processes", lambda: 4)
    with pytest.raises(ValueError, match="cannot be shared evenly between 4 processes"):
        distributed.per_process(6, 1)


@pytest.fixture(scope="module")
def smoke_04_restored(tmp_path_factory, smoke_stages):
    """The smoke stages 01-03 (a no-op when up to date); 04's trained parts are copied aside and
    put back afterwards (the runs below retrain GeMKR tuning with a 2-process batch split, in
    the cache folder notebook 04 uses)."""
    smoke_stages("01", "02", "03")
    stage = REPO_ROOT / "artifacts" / "smoke" / "04_training"
    saved = tmp_path_factory.mktemp("saved") / "04_training"
    if stage.exists():
        shutil.copytree(stage, saved, symlinks=True)
    yield
    shutil.rmtree(stage, ignore_errors=True)
    if saved.exists():
        shutil.copytree(saved, stage, symlinks=True)


def test_smoke_gemkr_trains_and_evaluates_in_two_processes_like_one(tmp_path,
                                                                   smoke_04_restored):
    # one process with the 2-process batch split: trains every missing stage, tunes, evaluates
    _run(tmp_path / "one", 1, "--train", "--as-processes", "2", script=SMOKE)
    # two processes evaluate the same weights (the cache the run above wrote): equal tables,
    # GeMKR's clues included
    _run(tmp_path / "two_eval", 2, script=SMOKE)
    one = json.loads((tmp_path / "one" / "tables.json").read_text())
    two = json.loads((tmp_path / "two_eval" / "tables.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["ranked"]["GeMKR"] and one["clues"]
    assert two["scores"] == one["scores"]
    assert two["ranked"] == one["ranked"]
    assert two["clues"] == one["clues"]
    # two processes retrain the tuning stage: the weights of the one-process run
    _run(tmp_path / "two", 2, "--train", script=SMOKE)
    w1 = load_file(str(tmp_path / "one" / "tuning.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "tuning.safetensors"))
    assert set(w1) == set(w2)
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert worst <= SMOKE_ATOL, f"largest difference {worst:.2e}"
