"""gemkr: the shared package of the GeMKR kit (Long et al., AAAI 2024, arXiv 2401.08206).

Notebooks import it and stay thin. Importing it is cheap (no torch) and switches the Hugging Face
libraries to offline mode: the kit never downloads anything at run time.
"""

from __future__ import annotations

import os

from .offline import block_network, enforce_offline_env

__version__ = "0.1.0"

enforce_offline_env()
if os.environ.get("GEMKR_BLOCK_NETWORK") == "1":  # set by the test suite for notebook kernels
    block_network()

from .config import PROFILE_NAMES, Config, ConfigError, get_config  # noqa: E402
from .session import Context, setup  # noqa: E402

__all__ = [
    "PROFILE_NAMES",
    "Config",
    "ConfigError",
    "Context",
    "get_config",
    "setup",
    "__version__",
]
