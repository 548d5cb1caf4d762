"""Your own knowledge base: read a passage file, index it once, reuse the index.

A knowledge base file is JSONL (one ``{"id": ..., "text": ...}`` object per line), CSV or TSV
(columns ``id`` and ``text``; other columns are ignored). `load_passages` reads and checks it;
`user_index` builds the FM-index GeMKR's constrained decoder needs and caches it under
``artifacts/<profile>/kb/<content hash>/``, so a second call is instant and an edited file (new
hash) is indexed anew. The MiniLM vectors of the dense baseline are built on demand
(`user_vectors`) and cached next to it. Every cache is written to a temporary folder and renamed
into place, so a crash while indexing leaves the previous cache or none.

Passages get kit passage ids 0..n-1 in file order (``pid``); the file's own ids stay in ``id``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


class KBFileError(ValueError):
    """A knowledge base file that cannot be used; the message names the problem and the file."""


def file_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (the cache key of its index)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise KBFileError(f"knowledge base file {path} not found")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise KBFileError(f"{path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from err


def _rows_jsonl(text: str, path: Path) -> list[tuple[object, object]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise KBFileError(f"{path} line {n}: not a JSON object ({err.msg})") from err
        if not isinstance(obj, dict) or "id" not in obj or "text" not in obj:
            raise KBFileError(f'{path} line {n}: expected {{"id": ..., "text": ...}}')
        rows.append((obj["id"], obj["text"]))
    return rows


def _rows_table(text: str, path: Path, delimiter: str) -> list[tuple[object, object]]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "id" not in fields or "text" not in fields:
        raise KBFileError(f"{path}: needs a header with columns 'id' and 'text' "
                          f"(found {reader.fieldnames})")
    reader.fieldnames = fields
    return [(r["id"], r["text"]) for r in reader]


def load_passages(path: str | Path) -> pd.DataFrame:
    """The passages of a JSONL / CSV / TSV file: columns ``pid`` (0..n-1), ``id`` (the file's,
    as text) and ``text``. Raises `KBFileError` for an unknown format, a file that is not UTF-8,
    an empty knowledge base, duplicate ids or a passage with no text."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise KBFileError(f"{path}: unknown knowledge base format {path.suffix!r}; use "
                          ".jsonl, .csv or .tsv")
    text = _read_text(path)
    rows = (_rows_jsonl(text, path) if kind == "jsonl" else
            _rows_table(text, path, "," if kind == "csv" else "\t"))
    if not rows:
        raise KBFileError(f"{path} holds no passages")
    ids = [str(i).strip() for i, _ in rows]
    texts = ["" if t is None else str(t).strip() for _, t in rows]
    if any(not i for i in ids):
        raise KBFileError(f"{path}: passage {ids.index('') + 1} has an empty id")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise KBFileError(f"{path}: duplicate passage id {i!r}")
        seen.add(i)
    empty = [i for i, t in zip(ids, texts, strict=True) if not t]
    if empty:
        raise KBFileError(f"{path}: passage {empty[0]!r} has no text")
    return pd.DataFrame({"pid": np.arange(len(rows), dtype=np.int64), "id": ids, "text": texts})


@dataclass
class UserKB:
    """A knowledge base of one's own: its passages, index and where its cache lives."""

    name: str
    passages: pd.DataFrame
    index: object  # CorpusIndex
    folder: Path
    built: bool  # False when the index came from the cache
    seconds: float


def cache_folder(profile: str, digest: str) -> Path:
    from .paths import user_kb_dir

    return user_kb_dir(profile) / digest[:16]


def user_index(path: str | Path, tok, tokenizer_name: str, profile: str,
               force: bool = False) -> UserKB:
    """Load and index a knowledge base file (cached by its content hash and the tokenizer)."""
    from .kb_index import index_cache, kb_index

    start = time.perf_counter()
    passages = load_passages(path)
    folder = cache_folder(profile, file_hash(path))
    built = not index_cache(profile, "index", passages, tokenizer_name, force, folder).valid
    index = kb_index(profile, "index", passages, tok, tokenizer_name, force=force, root=folder)
    return UserKB(Path(path).name, passages, index, folder, built, time.perf_counter() - start)


def user_vectors(kb: UserKB, encoder) -> np.ndarray:
    """MiniLM vectors of the passages (dense baseline), built on first use and cached."""
    from .artifacts import atomic_path
    from .embeddings import encode

    target = kb.folder / "minilm.npy"
    if target.exists():
        vectors = np.load(target)
        if vectors.shape[0] == len(kb.passages):
            return vectors
    vectors = encode(encoder, kb.passages["text"].tolist())
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    return vectors
