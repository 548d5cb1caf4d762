"""No network at run time (DESIGN §7).

`enforce_offline_env` sets the Hugging Face offline switches (done when `gemkr` is imported).
`block_network` makes every non-local socket connection fail; the test suite turns it on in notebook
kernels through the ``GEMKR_BLOCK_NETWORK=1`` environment variable, so that a notebook that tries to
download something fails its test instead of silently reaching the internet.
"""

from __future__ import annotations

import os
import socket

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "YOLO_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}


class NetworkBlockedError(RuntimeError):
    """Raised by a socket connection to a non-local host while the network is blocked."""


def enforce_offline_env() -> None:
    """Set the offline environment variables (user-set values are kept)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def block_network() -> None:
    """Patch `socket.socket.connect` so only loopback and Unix sockets connect. Idempotent."""
    if getattr(socket.socket.connect, "_gemkr_guard", False):
        return
    original = socket.socket.connect

    def guarded(self: socket.socket, address, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in _LOCAL_HOSTS:
                raise NetworkBlockedError(
                    f"network access to {host!r} blocked: the GeMKR kit runs offline "
                    "(GEMKR_BLOCK_NETWORK=1); load assets from installed packages instead"
                )
        return original(self, address, *args, **kwargs)

    guarded._gemkr_guard = True  # type: ignore[attr-defined]
    socket.socket.connect = guarded  # type: ignore[method-assign]
