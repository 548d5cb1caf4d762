"""Corpus index over token ids: the FM-index role of GeMKR's constrained decoding (paper-notes §11).

Why the kit owns this (rather than SEAL's sdsl FM-index, which needs a C++ build and is CC-BY-NC):
a suffix array over the *forward* token stream answers the same questions. All suffixes that start
with a prefix p form one contiguous interval [lo, hi) of the suffix array (SA) -- the same interval
an FM-index's backward search finds -- and inside it the tokens that follow p are already sorted.
So one pass over the interval yields the allowed next tokens *and* each one's child interval: the
next decoding step is a lookup, not a search.

Layout per shard: ``text`` (the stream ``[bos] doc [eos] [bos] doc [eos] ...`` in the narrowest
unsigned dtype), ``sa`` (int32 suffix array), ``doc_starts`` (offset of each passage), a unigram
table (SA offset of each token id) and child tables that make the widest intervals O(1): the
bigram runs of every frequent token, and the child runs of every wide interval at depths 2-5.
About 6 bytes per token plus the tables (benchmark: under 8 in all).
Shards (``shard_tokens``) never split a passage and answer as one index: continuations are unions,
counts sums, documents concatenations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifacts import atomic_path, write_json
from .progress import bar
from .shard import IndexError_, Shard, suffix_array

__all__ = ["FORMAT", "VERSION", "CorpusIndex", "IndexError_", "State", "suffix_array"]

FORMAT = "gemkr-corpus-index"
VERSION = 1


@dataclass(frozen=True)
class State:
    """A decoding state: the clue's length and its SA interval [lo, hi) in each shard.

    `ended` marks a clue whose last token is EOS: nothing follows it inside a passage.
    """

    depth: int
    spans: tuple[tuple[int, int], ...]
    ended: bool = False

    @property
    def count(self) -> int:
        return sum(hi - lo for lo, hi in self.spans)


def _token_dtype(vocab_size: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise IndexError_(f"vocabulary of {vocab_size} ids does not fit 32 bits")


class CorpusIndex:
    """The knowledge base's token stream, searchable by prefix (see the module docstring).

    A pattern matches inside one stored passage ``[bos] doc [eos]``: it may end with EOS but never
    runs past it, so shards (which never split a passage) answer exactly like one index. Passages
    are numbered 0..num_docs-1 in build order; `ids` maps them to the KB's passage ids,
    which is what `docs` returns.
    """

    def __init__(self, shards: list[Shard], header: dict, ids: np.ndarray):
        self.shards = shards
        self.header = header
        self.ids = ids
        self.eos = int(header["eos"])
        self.bos = header["bos"]
        self.vocab_size = int(header["vocab_size"])
        self._root_allowed: np.ndarray | None = None  # the root's allowed set, merged once

    # ----------------------------------------------------------------------------------- build
    @classmethod
    def build(cls, docs: Sequence[Sequence[int]], *, eos: int, bos: int | None = None,
              vocab_size: int | None = None, ids: Sequence[int] | None = None,
              shard_tokens: int | None = None, progress: bool = True) -> CorpusIndex:
        """Index `docs` (token-id sequences), each stored as ``[bos] + doc + [eos]``.

        `shard_tokens` caps the tokens per shard (a passage is never split).
        """
        if not len(docs):
            raise IndexError_("cannot index an empty corpus")
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        if (lengths == 0).any():
            raise IndexError_(f"passage #{int(np.argmax(lengths == 0))} has no tokens")
        extra = 1 + (bos is not None)
        sizes = lengths + extra
        del lengths
        cap = shard_tokens or int(sizes.sum())
        if sizes.max() > cap:
            raise IndexError_(f"a passage of {int(sizes.max())} tokens exceeds shard_tokens={cap}")
        groups, start, acc = [], 0, 0
        for i, s in enumerate(sizes.tolist()):
            if _starts_new_shard(acc, s, cap):
                groups.append((start, i))
                start, acc = i, 0
            acc += s
        groups.append((start, len(docs)))
        if vocab_size is None:
            vocab_size = max(int(p.max()) for p in _pieces(docs, bos, eos)) + 1
        dtype = _token_dtype(vocab_size)
        shards = []
        for a, b in bar(groups, desc="index shards", disable=not progress):
            shards.append(_shard(docs[a:b], sizes[a:b], a, eos=eos, bos=bos,
                                 vocab_size=vocab_size, dtype=dtype))
        header = _header(eos, bos, vocab_size, dtype, len(docs), int(sizes.sum()), len(shards))
        ids_arr = np.arange(len(docs), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if ids_arr.shape != (len(docs),):
            raise IndexError_(f"ids has {ids_arr.size} entries for {len(docs)} passages")
        return cls(shards, header, ids_arr)

    @classmethod
    def build_streamed(cls, directory: str | Path, docs: Iterable[Sequence[int]], *, eos: int,
                       bos: int | None, vocab_size: int, shard_tokens: int,
                       ids: Iterable[int] | None = None, progress: bool = True) -> Path:
        """Index a corpus too large for memory straight into `directory`, shard by shard: `docs`
        is read once (an iterator is fine), each shard of at most `shard_tokens` stored tokens is
        built, written and dropped before the next one starts, so peak memory is one shard's
        build. The files are those of `save` (`load` memory-maps them) and equal, array for
        array, to ``build(..., shard_tokens=shard_tokens).save(directory)`` of the same docs.
        Returns `directory`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        dtype = _token_dtype(vocab_size)
        extra = 1 + (bos is not None)
        files, offsets, id_parts = {}, [], []
        ids_it = iter(ids) if ids is not None else None
        batch: list[Sequence[int]] = []
        sizes: list[int] = []
        n_docs = n_tokens = held = 0  # held: stored tokens of the shard being collected
        progress_bar = bar(desc="index shards (streamed)", disable=not progress)

        def flush():
            nonlocal n_docs, n_tokens, held, batch, sizes
            shard = _shard(batch, np.asarray(sizes, np.int64), n_docs, eos=eos, bos=bos,
                           vocab_size=vocab_size, dtype=dtype)
            files.update(_save_arrays(d, {f"shard{len(offsets)}_{f}.npy": getattr(shard, f)
                                          for f in Shard.FILES}))
            offsets.append(n_docs)
            n_docs, n_tokens, held, batch, sizes = n_docs + len(batch), n_tokens + held, 0, [], []
            progress_bar.update()

        for doc in docs:
            size = len(doc) + extra
            if len(doc) == 0:
                raise IndexError_(f"passage #{n_docs + len(batch)} has no tokens")
            if size > shard_tokens:
                raise IndexError_(f"a passage of {size} tokens exceeds shard_tokens={shard_tokens}")
            if _starts_new_shard(held, size, shard_tokens):
                flush()
            batch.append(doc)
            sizes.append(size)
            held += size
            if ids_it is not None:
                id_parts.append(next(ids_it))
        if batch:
            flush()
        progress_bar.close()
        if not offsets:
            raise IndexError_("cannot index an empty corpus")
        ids_arr = (np.arange(n_docs, dtype=np.int64) if ids_it is None
                   else np.asarray(id_parts, dtype=np.int64))
        if ids_arr.shape != (n_docs,):
            raise IndexError_(f"ids has {ids_arr.size} entries for {n_docs} passages")
        files.update(_save_arrays(d, {"ids.npy": ids_arr}))
        header = _header(eos, bos, vocab_size, dtype, n_docs, n_tokens, len(offsets))
        write_json(d / "index.json", {**header, "files": files, "doc_offsets": offsets})
        return d

    # --------------------------------------------------------------------------------- queries
    @property
    def num_docs(self) -> int:
        return int(self.header["num_docs"])

    @property
    def num_tokens(self) -> int:
        return int(self.header["num_tokens"])

    def root(self) -> State:
        """The empty clue: every suffix of every shard."""
        return State(0, tuple((0, s.n) for s in self.shards))

    def extend(self, state: State, token: int) -> State:
        """The state of clue + [token] (its count is 0 when that clue occurs nowhere)."""
        if not 0 <= token < self.vocab_size:
            raise IndexError_(f"token id {token} outside the vocabulary [0, {self.vocab_size})")
        if state.ended:  # matches never run past a passage's EOS into the next passage
            return State(state.depth + 1, tuple((0, 0) for _ in self.shards), True)
        return State(state.depth + 1, tuple(s.child(sp, state.depth, token)
                                            for s, sp in zip(self.shards, state.spans,
                                                             strict=True)),
                     ended=token == self.eos)

    def state(self, pattern: Sequence[int]) -> State:
        st = self.root()
        for t in pattern:
            st = self.extend(st, int(t))
            if st.count == 0:
                break
        return st

    def allowed(self, state: State) -> np.ndarray:
        """Sorted distinct tokens t such that clue + [t] occurs (union over shards)."""
        if state.ended:
            return np.empty(0, dtype=np.int64)
        if state.depth == 0 and len(self.shards) > 1:  # the root's set: every shard's tokens
            if self._root_allowed is None:
                self._root_allowed = self._union([s.occurring for s in self.shards])
            return self._root_allowed
        return self._union([s.continuations(sp, state.depth)
                            for s, sp in zip(self.shards, state.spans, strict=True)])

    def _union(self, parts: list[np.ndarray]) -> np.ndarray:
        """Sorted distinct tokens of the shards' sorted sets. Large sets are merged through a
        mask over the vocabulary: sorting their concatenation cost milliseconds per beam step on
        a two-shard index near the root (measured at 200M tokens: 1.97 ms against 0.034 ms with
        one shard)."""
        parts = [p for p in parts if p.size]
        if len(parts) <= 1:
            return parts[0] if parts else np.empty(0, dtype=np.int64)
        if sum(p.size for p in parts) <= 64:
            return np.unique(np.concatenate(parts))
        mask = np.zeros(self.vocab_size, dtype=bool)
        for p in parts:
            mask[p] = True
        return np.flatnonzero(mask).astype(np.int64, copy=False)

    def state_docs(self, state: State) -> np.ndarray:
        """Sorted KB passage ids containing the clue."""
        parts = [s.doc_ids(sp) for s, sp in zip(self.shards, state.spans, strict=True)]
        return self.ids[np.concatenate(parts)] if parts else np.empty(0, np.int64)

    def is_unique(self, state: State) -> bool:
        """Does the clue occur in exactly one passage (possibly several times)?"""
        if state.count == 0:
            return False
        if state.count == 1:
            return True
        return len(self.state_docs(state)) == 1

    def count(self, pattern: Sequence[int]) -> int:
        """Occurrences of `pattern` inside passages (the empty pattern: all stored tokens)."""
        return self.state(pattern).count if len(pattern) else self.num_tokens

    def docs(self, pattern: Sequence[int]) -> np.ndarray:
        """Sorted KB passage ids whose stored tokens contain `pattern`."""
        st = self.state(pattern)
        return np.sort(self.state_docs(st)) if st.depth == len(pattern) else np.empty(0, np.int64)

    def continuations(self, prefix: Sequence[int]) -> np.ndarray:
        """Sorted distinct token ids t such that prefix + [t] occurs (EOS included where the
        prefix ends a passage; the empty prefix gives every token that occurs)."""
        st = self.state(prefix)
        if st.depth < len(prefix) or st.count == 0:
            return np.empty(0, dtype=np.int64)
        return self.allowed(st)

    def passage_tokens(self, i: int) -> np.ndarray:
        """Stored tokens of passage number `i` (build order) without its BOS and EOS."""
        for sh in self.shards:
            if sh.doc_offset <= i < sh.doc_offset + sh.doc_starts.size:
                j = i - sh.doc_offset
                start = int(sh.doc_starts[j]) + (self.bos is not None)
                end = int(sh.doc_starts[j + 1]) if j + 1 < sh.doc_starts.size else sh.n
                return np.asarray(sh.text[start:end - 1])
        raise IndexError_(f"passage number {i} outside [0, {self.num_docs})")

    def number_of(self, pid: int) -> int:
        """Passage number (build order) of KB passage id `pid`."""
        if not hasattr(self, "_number"):
            self._number = {int(p): i for i, p in enumerate(self.ids.tolist())}
        try:
            return self._number[int(pid)]
        except KeyError as err:
            raise IndexError_(f"passage id {pid} is not in this index") from err

    def nbytes(self) -> int:
        """Resident bytes of the index arrays."""
        return sum(getattr(s, f).nbytes for s in self.shards for f in Shard.FILES) + \
            self.ids.nbytes

    # ------------------------------------------------------------------------------ save, load
    def save(self, directory: str | Path) -> Path:
        """Plain ``.npy`` files plus ``index.json`` (format, version, sizes, sha256 per file),
        written last so a partly written folder never loads."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"ids.npy": self.ids}
        for k, s in enumerate(self.shards):
            arrays |= {f"shard{k}_{f}.npy": getattr(s, f) for f in Shard.FILES}
        files = _save_arrays(d, arrays)
        write_json(d / "index.json", {**self.header, "files": files,
                                      "doc_offsets": [s.doc_offset for s in self.shards]})
        return d

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True, verify: bool = True) -> CorpusIndex:
        """Load a saved index (memory-mapped by default). A missing, truncated or corrupt file,
        or a different format version, raises `IndexError_` naming it."""
        d = Path(directory)
        try:
            header = json.loads((d / "index.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as err:
            raise IndexError_(f"{d / 'index.json'} missing or unreadable: rebuild the index "
                              "(notebook 03 with FORCE=True)") from err
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise IndexError_(f"{d} holds {header.get('format')} version {header.get('version')}"
                              f"; this kit reads {FORMAT} version {VERSION}: rebuild the index")
        arrays = {}
        for name, info in header["files"].items():
            p = d / name
            have = p.stat().st_size if p.exists() else 0
            if have != info["bytes"]:
                raise IndexError_(f"{p} is missing or truncated ({have} of {info['bytes']} "
                                  "bytes): rebuild the index")
            if verify and _sha256(p) != info["sha256"]:
                raise IndexError_(f"{p} is corrupt (checksum mismatch): rebuild the index")
            arrays[name] = np.load(p, mmap_mode="r" if mmap else None)
        shards = [Shard({f: arrays[f"shard{k}_{f}.npy"] for f in Shard.FILES},
                         header["vocab_size"], off, header["eos"])
                  for k, off in enumerate(header.pop("doc_offsets"))]
        header.pop("files")
        return cls(shards, header, np.asarray(arrays["ids.npy"]))

    @property
    def content_key(self) -> str:
        """A hash of the whole index (passage ids, tokens, suffix arrays): what a cache of
        something trained on this knowledge base is keyed by (computed once, from the arrays:
        the same for a built and a loaded index)."""
        key = getattr(self, "_content_key", None)
        if key is None:
            h = hashlib.sha256(np.ascontiguousarray(self.ids).tobytes())
            for s in self.shards:
                for f in Shard.FILES:
                    h.update(np.ascontiguousarray(getattr(s, f)).tobytes())
            key = self._content_key = h.hexdigest()[:16]
        return key


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _header(eos: int, bos: int | None, vocab_size: int, dtype: np.dtype, num_docs: int,
            num_tokens: int, shards: int) -> dict:
    return {"format": FORMAT, "version": VERSION, "eos": int(eos), "bos": bos,
            "vocab_size": vocab_size, "dtype": np.dtype(dtype).name, "num_docs": num_docs,
            "num_tokens": num_tokens, "shards": shards}


def _starts_new_shard(held: int, size: int, cap: int) -> bool:
    """The grouping rule of `build` and `build_streamed`: a passage of `size` stored tokens opens
    a new shard when the `held` tokens of the current one plus it would pass `cap`."""
    return held > 0 and held + size > cap


def _pieces(docs: Sequence[Sequence[int]], bos: int | None, eos: int):
    """The stream ``[bos] doc [eos] ...`` of `docs` as int64 pieces, ~8K passages per C call."""
    head = np.array([bos] if bos is not None else [], dtype=np.int64)
    tail = np.array([eos], dtype=np.int64)
    for c in range(0, len(docs), 1 << 13):
        yield np.concatenate([x for d in docs[c:c + (1 << 13)]
                              for x in (head, d, tail)]).astype(np.int64, copy=False)


def _shard(docs: Sequence[Sequence[int]], sizes: np.ndarray, doc_offset: int, *, eos: int,
           bos: int | None, vocab_size: int, dtype: np.dtype) -> Shard:
    """One shard of `docs` (their stored sizes `sizes`), validated piece by piece and narrowed
    to `dtype` as it is copied: no n-sized int64 stream."""
    text = np.empty(int(sizes.sum()), dtype=dtype)
    o = 0
    for piece in _pieces(docs, bos, eos):
        if piece.min() < 0 or piece.max() >= vocab_size:
            bad = int(piece[(piece < 0) | (piece >= vocab_size)][0])
            raise IndexError_(f"token ids must lie in [0, {vocab_size}); found {bad}")
        text[o:o + piece.size] = piece
        o += piece.size
    starts = np.zeros(len(docs), dtype=np.uint32 if text.size < 2**32 else np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    return Shard.build(text, starts, vocab_size, doc_offset=doc_offset, eos=eos)


def _save_arrays(d: Path, arrays: dict[str, np.ndarray]) -> dict:
    """Write each array as ``d/<name>`` (atomic); their sizes and sha256 for ``index.json``."""
    files = {}
    for name, arr in arrays.items():
        with atomic_path(d / name) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr))
        files[name] = {"bytes": (d / name).stat().st_size, "sha256": _sha256(d / name)}
    return files
