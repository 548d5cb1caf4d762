"""Seeding in one place (style guide §11): CPU profiles repeat bitwise on the same versions."""

from __future__ import annotations

import os
import random

# numpy and torch are imported inside the functions: `import gemkr` stays stdlib-only, so
# run_all.sh can validate its arguments before the environment is installed.


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed `random`, NumPy's legacy global state and torch (CPU and CUDA).

    With `deterministic`, torch picks deterministic kernels (warns where none exists).
    Stages should still draw from their own generator, see `stage_rng`.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds legacy global state used by libraries)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    try:
        import torch
    except ImportError:  # the data stages run without torch imported
        return
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False


def stage_rng(seed: int, stage_no: int):
    """The stage's own NumPy generator: independent streams per stage from one base seed."""
    import numpy as np

    return np.random.default_rng([seed, stage_no])
