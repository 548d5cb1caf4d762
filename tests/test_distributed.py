"""Several processes, one result (issue 27): `train.fit` under torchrun with 2 CPU processes
(gloo) ends with the weights of one process with the same global batch, writes checkpoints from
the main process only and resumes from them; the evaluation helpers share batches out and
gather them back in order."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from gemkr import distributed
from gemkr.paths import REPO_ROOT

SCRIPT = str(REPO_ROOT / "tests" / "helpers" / "fit_processes.py")
# float tolerance: the 2-process run adds the same per-micro-batch gradients in another order
ATOL = 1e-6


def _run(out, processes: int, *extra, expect: int = 0):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = ([sys.executable, SCRIPT] if processes == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", "29531", SCRIPT])
    proc = subprocess.run([*cmd, str(out), *extra], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
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
    assert len(two_info["history"]) == len(one_info["history"]) == 3 * 7
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
    assert state["epoch"] == 2 and len(state["history"]) == 2 * 7
    assert sorted(p.name for p in ckpt.iterdir()) == ["optimizer.pt", "state.json",
                                                      "trainable.safetensors"]
    _run(tmp_path / "resumed.safetensors", 2, "--ckpt", str(ckpt))
    whole, _ = _weights(tmp_path / "whole.safetensors")
    resumed, info = _weights(tmp_path / "resumed.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert len(info["history"]) == 3 * 7


def test_one_process_helpers_are_the_identity():
    assert distributed.world() == (1, 0) and distributed.is_main()
    assert distributed.share(range(5)) == [0, 1, 2, 3, 4]
    assert distributed.in_batches(lambda a, b: list(range(a, b)), 10, 3) == list(range(10))
