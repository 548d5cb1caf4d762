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
FIX = {"jsonl": 'one {"id": ..., "text": ...} object per line',
       "csv": "a header with columns id and text, fields quoted as CSV quotes them",
       "tsv": "a header with columns id and text, tab-separated, fields with quotes or tabs "
              'quoted as CSV quotes them ("a ""b"" c")'}


class KBFileError(ValueError):
    """A knowledge base file that cannot be used; the message names the file, the line where it
    applies and what to do."""


class _Hashing(io.RawIOBase):
    """A binary file that hashes the bytes it hands out: the file is read, checked and hashed
    in one pass (a large knowledge base is never read twice nor held whole as bytes)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.f.readinto(buf)
        if n:
            self.sha.update(memoryview(buf)[:n])
        return n


def file_hash(path: str | Path) -> str:
    """sha256 of the file's bytes (the cache key of its index)."""
    from .artifacts import sha256_file

    return sha256_file(path)


def _open(path: Path):
    """The file opened for reading, or a KBFileError saying why it cannot be."""
    if path.is_dir():
        raise KBFileError(f"{path} is a folder: give the knowledge base file inside it")
    if not path.exists():
        raise KBFileError(f"knowledge base file {path} not found")
    try:
        return open(path, "rb")
    except OSError as err:  # permission denied, a device, ...
        raise KBFileError(f"{path} cannot be read ({err.strerror}): check its permissions"
                          ) from err


def _check_id(value, path: Path, where: str) -> str:
    # ids are text or integers: null, floats, lists and objects would become their Python repr
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise KBFileError(f"{path} {where}: the id {json.dumps(value)} is not a string or an "
                          "integer; give every passage a text or integer id")
    text = str(value)
    if not text.strip():
        raise KBFileError(f"{path} {where}: empty id; give every passage an id")
    if any(c in text for c in "\n\r\t"):
        raise KBFileError(f"{path} {where}: the id {text!r} holds a line break or tab; use ids "
                          "on one line")
    return text


def _check_text(value, path: Path, where: str) -> str:
    if not isinstance(value, str):
        raise KBFileError(f"{path} {where}: the text {json.dumps(value)[:40]} is not a string")
    if not value.strip():
        raise KBFileError(f"{path} {where}: the passage has no text")
    return value


def _rows_jsonl(f, path: Path):
    # lines end at "\n" only: U+2028, U+0085 and lone "\r" are valid inside a JSON string and
    # must not cut a line (str.splitlines would)
    for n, raw in enumerate(f, 1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise KBFileError(f"{path} line {n}: not UTF-8 text (byte {err.start} of the line); "
                              "save the file as UTF-8") from err
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise KBFileError(f"{path} line {n}: not a JSON object ({err.msg}); expected "
                              f"{FIX['jsonl']}") from err
        if not isinstance(obj, dict) or "id" not in obj or "text" not in obj:
            raise KBFileError(f'{path} line {n}: expected {FIX["jsonl"]}')
        where = f"line {n}"
        yield n, _check_id(obj["id"], path, where), _check_text(obj["text"], path, where)


def _rows_table(f, path: Path, kind: str):
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    # CSV and TSV quote as Python's csv module writes them (DPR's psgs_w100.tsv does too), read
    # strictly: a stray or unclosed quote is an error naming the line, not vanished quotes or
    # rows swallowed into one field
    reader = csv.reader(text, delimiter="\t" if kind == "tsv" else ",", strict=True)
    line = 1
    try:
        header = next(reader, None)
        fields = [h.strip().lower() for h in header or []]
        if "id" not in fields or "text" not in fields:
            raise KBFileError(f"{path} line 1: needs a header with columns 'id' and 'text' "
                              f"(found {header})")
        at_id, at_text = fields.index("id"), fields.index("text")
        for row in reader:
            where = f"line {line + 1}" if reader.line_num == line + 1 else \
                f"lines {line + 1}-{reader.line_num}"
            line = reader.line_num
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(fields):
                raise KBFileError(f"{path} {where}: {len(row)} fields under a header of "
                                  f"{len(fields)}; expected {FIX[kind]}")
            yield line, _check_id(row[at_id], path, where), _check_text(row[at_text], path, where)
    except UnicodeDecodeError as err:
        raise KBFileError(f"{path} after line {line}: not UTF-8 text; save the file as UTF-8"
                          ) from err
    except csv.Error as err:  # the row that starts after the last good one is malformed
        span = f"line {line + 1}" + (f" (read to line {reader.line_num})"
                                     if reader.line_num > line + 1 else "")
        raise KBFileError(f"{path} {span}: {err}; expected {FIX[kind]}") from err
    finally:
        text.detach()


def read_passages(path: str | Path) -> tuple[pd.DataFrame, str]:
    """`load_passages` and the file's sha256, from one pass over the file."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None and not path.is_dir():
        raise KBFileError(f"{path}: unknown knowledge base format {path.suffix!r}; use "
                          ".jsonl, .csv or .tsv")
    ids, texts, first_line = [], [], {}
    with _open(path) as raw:
        f = io.BufferedReader(_Hashing(raw), 1 << 20)
        old_limit = csv.field_size_limit()
        csv.field_size_limit(1 << 30)  # a passage may be long; the default stops at 131,072
        try:
            rows = _rows_jsonl(f, path) if kind == "jsonl" else _rows_table(f, path, kind)
            for line, pid, text in rows:
                if pid in first_line:
                    raise KBFileError(f"{path} line {line}: duplicate passage id {pid!r} (first "
                                      f"on line {first_line[pid]}); ids must be unique")
                first_line[pid] = line
                ids.append(pid)
                texts.append(text)
            while f.read(1 << 20):  # the rest of the file (blank lines) still goes in the hash
                pass
        finally:
            csv.field_size_limit(old_limit)
        digest = f.raw.sha.hexdigest()
    if not ids:
        raise KBFileError(f"{path} holds no passages; expected {FIX[kind]}")
    return pd.DataFrame({"pid": np.arange(len(ids), dtype=np.int64), "id": ids,
                         "text": texts}), digest


def load_passages(path: str | Path) -> pd.DataFrame:
    """The passages of a JSONL / CSV / TSV file: columns ``pid`` (0..n-1), ``id`` (the file's,
    as text) and ``text``, exactly as in the file. Every problem is a `KBFileError` naming the
    file, the line and what to do: an unknown format, a missing, unreadable or non-UTF-8 file,
    no passages, an id that is not a string or integer (or holds a line break), duplicate ids,
    a passage with no text, a malformed line or row."""
    return read_passages(path)[0]


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
               force: bool = False, folder: str | Path | None = None) -> UserKB:
    """Load and index a knowledge base file (cached by its content hash and the tokenizer,
    under the profile's ``kb/`` folder, or under `folder` when given)."""
    from .kb_index import index_cache, kb_index

    start = time.perf_counter()
    passages, digest = read_passages(path)  # read, checked and hashed in one pass
    folder = cache_folder(profile, digest) if folder is None else Path(folder)
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
