"""pytest set-up shared by unit tests and nbval notebook runs (style guide §9)."""

import os

# Before anything imports matplotlib / transformers / torch.
os.environ.update(
    {
        "MPLBACKEND": "Agg",
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "2",
        "YOLO_OFFLINE": "1",
    }
)
# Notebook kernels inherit this and `import gemkr` then blocks non-local sockets (gemkr.offline).
os.environ.setdefault("GEMKR_BLOCK_NETWORK", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)
