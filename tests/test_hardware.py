"""bfloat16 autocast in training: products in bf16, state in float32, learning unchanged."""

import os

import pytest
import torch

from gemkr import train
from gemkr.hardware import autocast, bf16_native, cores


def test_autocast_switch():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", False):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", True):
        assert (a @ b).dtype == torch.bfloat16
    assert bf16_native("meta") is False
    assert 1 <= cores() <= (os.cpu_count() or 1)


def test_bf16_native_follows_the_cpus_flags():
    """Native bfloat16 where the CPU has AVX512-BF16 or AMX; never without AVX512 (AVX2 only,
    where autocast would emulate it, 5-6x slower than float32)."""
    try:
        flags = set(next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
                    .split(":", 1)[1].split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert bf16_native("cpu") is True
    if "avx512bw" not in flags:
        assert bf16_native("cpu") is False


def _regression(bf16: bool) -> tuple[torch.nn.Module, dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=g)
    y = x @ torch.randn(16, 1, generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    out = train.fit(model, lambda m, b: torch.nn.functional.mse_loss(m(b[0]).float(), b[1]),
                    lambda e: batches, epochs=30, steps_per_epoch=len(batches), lr=1e-2,
                    min_lr=1e-3, warmup_steps=5, weight_decay=0.0, bf16=bf16)
    return model, out


def test_fit_in_bf16_learns_like_fp32_and_keeps_float32_state():
    m16, out16 = _regression(True)
    m32, out32 = _regression(False)
    assert out16["precision"] == "bf16 autocast" and out32["precision"] == "fp32"
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    assert out16["history"][-1] < 0.05 * out16["history"][0]
    # same schedule, same seed: the bf16 run ends near the fp32 one (rounded products only)
    assert abs(out16["history"][-1] - out32["history"][-1]) < 0.05 * out32["history"][0]


def test_fit_runs_the_loss_products_in_bf16_only_when_asked():
    """The label is not enough: inside `fit`, the activations the loss sees are bfloat16 on the
    bf16 path and float32 otherwise (GeMKR's loss: `model.GeMKR.forward`)."""
    seen = {}
    x = torch.randn(8, 4)

    def loss(m, b):
        out = m(b)
        seen.setdefault(bf16, out.dtype)
        return out.float().pow(2).mean()

    for bf16 in (True, False):
        train.fit(torch.nn.Linear(4, 2), loss, lambda e: [x], epochs=1, steps_per_epoch=1,
                  lr=1e-3, min_lr=1e-4, warmup_steps=0, weight_decay=0.0, bf16=bf16)
    assert seen == {True: torch.bfloat16, False: torch.float32}
