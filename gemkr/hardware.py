"""What this machine offers the kit: its CPU cores, and bfloat16 where it runs natively.

The kit's CPU profiles spend most of their time in matrix products. On a CPU with AVX512-BF16
(or AMX) a bfloat16 product runs ~2.7x faster than float32 (5760x256 @ 256x1024 on 2 cores:
404 vs 150 GFLOP/s, measured), so training steps and the MiniLM passage encoder run under
`torch.autocast(dtype=torch.bfloat16)`: weights, gradients and optimizer state stay float32
(mixed precision, as the paper trained LLaMA), only the products are rounded. Where bfloat16 is
emulated (older CPUs) autocast would be *slower*, so it is used only where it is native.
"""

from __future__ import annotations

import contextlib
import os

# torch is imported inside the functions: modules that only need `cores` stay light.


def cores() -> int:
    """CPU cores this process may use (``sched_getaffinity`` is Linux-only)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def processor() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; None where it cannot be read)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def bf16_native(device="cpu") -> bool:
    """Whether bfloat16 products run natively on `device` (CPU: oneDNN's AVX512-BF16 / AMX
    check; CUDA: the GPU's own check)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast(device, enabled: bool):
    """bfloat16 autocast on `device` when `enabled` (a no-op context otherwise)."""
    if not enabled:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
