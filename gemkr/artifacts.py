"""Atomic writes, cache keys and the run manifest (DESIGN §7, style guide §7 and §12).

Every file the kit writes goes through `atomic_write` (temp file in the same folder + `os.replace`),
so an interrupted run never leaves a complete-looking file. A cached stage lives in a folder
``artifacts/<profile>/<stage>/<name>/`` holding ``_meta.json`` written *last*: a folder without a
matching ``_meta.json`` is never read as valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .paths import REPO_ROOT, rel, results_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


# --------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (bytes, or str as UTF-8) to `path` atomically; return the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, stable JSON (sorted keys, indent 2, trailing newline)."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(df: Any, path: str | os.PathLike) -> Path:
    """Atomic tidy CSV of a pandas DataFrame: no index, floats as %.6f (style guide §7)."""
    return atomic_write(path, df.to_csv(index=False, float_format="%.6f", lineterminator="\n"))


# ------------------------------------------------------------------------------------ cache keys
def source_hash(parts: tuple[str, ...] = ("",)) -> str:
    """sha256 over the ``gemkr/<part>`` source files (path and bytes; default: all of gemkr).

    A stage passes the parts it depends on, e.g. ``("data", "config.py")``, so that editing the
    decoder does not invalidate the benchmark; ``()`` when the key names its inputs otherwise.
    """
    h = hashlib.sha256()
    root = REPO_ROOT / "gemkr"
    files = {p for part in parts for p in ([root / part] if (root / part).is_file()
                                            else (root / part).rglob("*"))}
    for p in sorted(f for f in files if f.suffix in (".py", ".csv")):
        h.update(str(p.relative_to(REPO_ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(*parts: Any) -> str:
    """A short sha256 of JSON-serialisable parts (config fields, upstream keys, source hash)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class StageCache:
    """A cache-keyed folder of one artifact: ``with cache.writing() as tmp_dir: ...``.

    `valid` is True only when the folder exists and its ``_meta.json`` has the same key.
    Writing goes to a ``tmp-<uuid>`` sibling that replaces the folder in one rename.
    """

    def __init__(self, root: Path, name: str, key: str, force: bool = False):
        self.path = Path(root) / name
        self.key = key
        self.force = force

    @property
    def meta(self) -> dict | None:
        try:
            return json.loads((self.path / "_meta.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def checked_meta(self) -> dict | None:
        """The stored ``_meta.json`` when the cache is valid, else None. Under N processes the
        main process decides for all (`distributed.agreed`)."""
        from .distributed import agreed

        meta = self.meta
        ok = (
            not self.force
            and meta is not None
            and meta.get("key") == self.key
            and meta.get("format_version") == FORMAT_VERSION
        )
        if not agreed(ok):
            return None
        return meta if ok else self.meta  # valid for the main process: read it here too

    @property
    def valid(self) -> bool:
        return self.checked_meta() is not None

    @contextlib.contextmanager
    def writing(self, **info: Any) -> Iterator[Path]:
        """Yield an empty temp folder; on success it atomically becomes `self.path`.

        Under N processes every process computes the same artifact, the main one moves it into
        place, the others drop theirs, and all wait until it is there."""
        from .distributed import barrier, is_main

        tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            yield tmp
            if not is_main():
                self.force = False
                barrier()
                return
            write_json(
                tmp / "_meta.json",
                {
                    "key": self.key,
                    "format_version": FORMAT_VERSION,
                    "seconds": round(time.perf_counter() - start, 3),
                    **info,
                },
            )
            old = None
            if self.path.exists():  # swap: rename the old folder away, then the new one in
                old = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(self.path, old)
            os.replace(tmp, self.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self.force = False
            barrier()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def stage_cache(root: Path, name: str, key_parts: tuple, force: bool = False,
                sources: tuple[str, ...] = ("",)) -> StageCache:
    """A `StageCache` keyed by `key_parts` plus the hash of the gemkr `sources` it depends on."""
    return StageCache(root, name, cache_key(*key_parts, source_hash(sources)), force=force)


def clean_stale_temps(root: Path) -> int:
    """Remove temp files/folders left by an interrupted run under `root`; return how many."""
    n = 0
    for p in Path(root).rglob(".*.tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


# --------------------------------------------------------------------------------------- manifest
def git_state() -> dict[str, Any]:
    """Commit hash and dirty flag of the repository (None when git is unavailable)."""

    def run(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_output(profile: str, stage: str, path: str | os.PathLike, **info: Any) -> None:
    """Append (or refresh) one output file's entry in ``results/<profile>/outputs.json``."""
    index = results_dir(profile) / "outputs.json"
    with _locked(index):
        try:
            entries = json.loads(index.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            entries = {}
        entries[rel(path)] = {"stage": stage, "sha256": sha256_file(path), **info}
        write_json(index, entries)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for read-modify-write of `path` (tests may write results concurrently)."""
    import fcntl

    with open(
        tempfile.gettempdir() + f"/gemkr-{hashlib.md5(str(path).encode()).hexdigest()}.lock", "w"
    ) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
