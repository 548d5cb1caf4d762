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

import ctypes
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .artifacts import atomic_path, write_json

FORMAT = "gemkr-corpus-index"
VERSION = 1
MATERIALIZE = 1 << 15  # intervals up to this wide are scanned with one vectorised gather
WIDE = 1 << 11  # bigram / trigram intervals wider than this get a precomputed child table
NARROW = 128  # tokens occurring at most this often get no bigram table (scanned instead)
LEVELS = (2, 3, 4, 5)  # depths with child tables for wide parents (few entries, big savings)
_CHUNK = 1 << 20
_RUN_CHUNK = 1 << 18


class IndexError_(ValueError):
    """A corrupt, truncated or wrong-version index file, or an invalid token id."""


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


def suffix_array(text: np.ndarray) -> np.ndarray:
    """Suffix array of an unsigned integer array (token order = numeric order).

    Calls the libdivsufsort bundled with pydivsufsort directly: the tokens are byte-swapped *in
    place* to big-endian (so byte order = numeric order), sorted as bytes into one int32 buffer,
    the even (token-aligned) entries compacted in place and the buffer shrunk. Peak memory is about
    (itemsize + 4 * itemsize) bytes per token; pydivsufsort's own wrapper copies more.
    """
    import pydivsufsort

    if text.dtype == np.uint8:
        return np.asarray(pydivsufsort.divsufsort(text))
    size = text.dtype.itemsize
    n_bytes = text.size * size
    if n_bytes > np.iinfo(np.int32).max:
        raise IndexError_(f"{text.size:,} tokens exceed one int32 suffix sort; set shard_tokens "
                          f"to at most {np.iinfo(np.int32).max // size:,}")
    lib = pydivsufsort.divsufsort.__globals__["libdivsufsort"]
    sa = np.empty(n_bytes, dtype=np.int32)
    text.byteswap(inplace=True)  # now big-endian bytes; swapped back below
    try:
        ret = lib.divsufsort(text.view(np.uint8).ctypes.data_as(ctypes.c_void_p),
                             sa.ctypes.data_as(ctypes.c_void_p), ctypes.c_int32(n_bytes))
    finally:
        text.byteswap(inplace=True)
    if ret:
        raise RuntimeError(f"libdivsufsort failed with code {ret}")
    w = 0
    for start in range(0, n_bytes, _RUN_CHUNK):  # in-place compaction; w never passes start
        chunk = sa[start:start + _RUN_CHUNK]
        keep = chunk[chunk % size == 0] // size
        sa[w:w + keep.size] = keep
        w += keep.size
    sa.resize(text.size, refcheck=False)  # realloc in place: frees the byte-level half
    return sa


def _runs(text: np.ndarray, sa: np.ndarray, lo: int, hi: int, depths: tuple[int, ...],
          keep=None) -> tuple[np.ndarray, ...]:
    """Maximal runs in SA[lo:hi] of equal tokens at `depths`: the tokens at each depth (in the
    text's dtype) and the SA start of every run (uint32 or int64), for the runs where
    ``keep(columns)`` holds (default: every token present, i.e. no suffix ending early).

    Chunked, filtered per chunk and stored narrow, so the build never holds an n-sized int64
    temporary (peak build memory is a benchmark target)."""
    pos_dt = np.uint32 if sa.size < 2**32 else np.int64
    toks: list[list[np.ndarray]] = [[] for _ in depths]
    starts, prev = [], None
    for s in range(lo, hi, _RUN_CHUNK):
        pos = sa[s:min(s + _RUN_CHUNK, hi)].astype(np.int64)
        cols = []
        for d in depths:  # -1 where the suffix ends before depth d
            col = np.full(pos.size, -1, dtype=np.int64)
            ok = pos + d < text.size
            col[ok] = text[pos[ok] + d]
            cols.append(col)
        change = np.zeros(pos.size, dtype=bool)
        for col in cols:
            change[1:] |= col[1:] != col[:-1]
        change[0] = prev is None or any(c[0] != p for c, p in zip(cols, prev, strict=True))
        first = np.flatnonzero(change)
        run_cols = [c[first] for c in cols]
        mask = keep(run_cols) if keep else np.logical_and.reduce([c >= 0 for c in run_cols])
        for t, col in zip(toks, run_cols, strict=True):
            t.append(col[mask].astype(text.dtype))
        starts.append((first[mask] + s).astype(pos_dt))
        prev = [c[-1] for c in cols]
    out = []
    for parts, dt in [*((t, text.dtype) for t in toks), (starts, pos_dt)]:
        out.append(np.concatenate(parts) if parts else np.empty(0, dt))
        parts.clear()  # free the chunks before concatenating the next column
    return tuple(out)


def _run_ends(starts: np.ndarray, off: np.ndarray, parent_hi: np.ndarray) -> np.ndarray:
    """End of each run: the next run's start within its parent, else the parent's end.

    `off` (len = parents + 1) delimits each parent's runs; `parent_hi[p]` is parent p's end."""
    ends = np.empty_like(starts)  # same (narrow) dtype as the starts: no int64 copies
    ends[:-1] = starts[1:]
    counts = np.diff(off)
    last = off[1:][counts > 0] - 1
    ends[last] = np.asarray(parent_hi)[counts > 0]
    return ends


def _level(text, sa, los, his, depth, pos_dt) -> dict[str, np.ndarray]:
    """Child table of the parent intervals [los, his): the runs of tokens at `depth`."""
    nxt, st, off = [], [], [0]
    for lo, hi in zip(los.tolist(), his.tolist(), strict=True):
        t, s = _runs(text, sa, lo, hi, (depth,))  # a suffix ending inside has no child
        nxt.append(t)
        st.append(s)
        off.append(off[-1] + t.size)

    def cat(xs, dt):
        return np.concatenate(xs).astype(dt) if xs else np.empty(0, dt)

    return {"lo": np.asarray(los, np.int64), "hi": np.asarray(his, np.int64),
            "off": np.asarray(off, np.int64), "next": cat(nxt, text.dtype),
            "start": cat(st, pos_dt)}


class _Shard:
    """One suffix-array shard; passage ids are global (offset by `doc_offset`).

    Child tables make wide intervals O(1): level 1 lists, for every token a, the runs (b, SA start)
    of the bigrams a b; level 2 does the same for the trigrams of every bigram whose interval is
    wider than `WIDE`. Each run ends where the next run of the same parent starts, or at the
    parent's end. Bigrams starting with EOS are never stored: nothing follows EOS in a passage.
    """

    FILES = ("text", "sa", "doc_starts", "unigram", "l1_off", "l1_next", "l1_start",
             *(f"l{d}_{f}" for d in LEVELS for f in ("lo", "hi", "off", "next", "start")))

    def __init__(self, arrays: dict[str, np.ndarray], vocab_size: int, doc_offset: int, eos: int):
        for name in self.FILES:
            setattr(self, name, arrays[name])
        self.V = vocab_size
        self.eos = eos
        self.doc_offset = doc_offset
        self.n = int(self.text.size)
        self.occurring = np.flatnonzero(np.diff(self.unigram)).astype(np.int64)

    @classmethod
    def build(cls, text: np.ndarray, doc_starts: np.ndarray, vocab_size: int, doc_offset: int,
              eos: int):
        sa = suffix_array(text)
        counts = np.zeros(vocab_size, dtype=np.int64)
        for s in range(0, text.size, _CHUNK):  # bincount casts to int64: chunk it
            counts += np.bincount(text[s:s + _CHUNK], minlength=vocab_size)
        unigram = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(counts, out=unigram[1:])
        pos_dt = np.uint32 if text.size < 2**32 else np.int64
        # level 1 only for tokens wider than NARROW (narrow ones are scanned in microseconds)
        wide_tok = np.diff(unigram) > NARROW
        wide_tok[eos] = False
        tok0, tok1, start = _runs(text, sa, 0, sa.size, (0, 1),
                                  keep=lambda c: wide_tok[c[0]] & (c[1] >= 0))
        off = np.searchsorted(tok0, np.arange(vocab_size + 1, dtype=np.int64)).astype(np.int64)
        del tok0
        arrays = {"text": text, "sa": sa, "doc_starts": doc_starts.astype(pos_dt),
                  "unigram": unigram, "l1_off": off, "l1_next": tok1, "l1_start": start}
        los, his = start, _run_ends(start, off, unigram[1:])
        for d in LEVELS:  # deeper levels: child runs of every wider-than-WIDE parent run
            wide = np.flatnonzero((his - los) > WIDE)
            level = _level(text, sa, los[wide].astype(np.int64), his[wide].astype(np.int64), d,
                           pos_dt)
            arrays |= {f"l{d}_{k}": v for k, v in level.items()}
            los = level["start"]
            his = _run_ends(los, level["off"], level["hi"].astype(los.dtype))
        return cls(arrays, vocab_size, doc_offset, eos)

    # -------------------------------------------------------------------------- intervals
    def _next(self, lo: int, hi: int, depth: int) -> np.ndarray:
        """Token following each suffix in [lo, hi) at offset `depth` (-1 past the end)."""
        pos = self.sa[lo:hi].astype(np.int64) + depth
        out = np.full(pos.size, -1, dtype=np.int64)
        ok = pos < self.n
        out[ok] = self.text[pos[ok]]
        return out

    def _tok_at(self, i: int, depth: int) -> int:
        p = int(self.sa[i]) + depth
        return int(self.text[p]) if p < self.n else -1

    def _bsearch(self, lo: int, hi: int, depth: int, token: int, right: bool) -> int:
        """First index in [lo, hi) whose token at `depth` is >= token (> token if `right`)."""
        while lo < hi:
            mid = (lo + hi) // 2
            t = self._tok_at(mid, depth)
            if t < token or (right and t == token):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _table(self, span: tuple[int, int], depth: int):
        """(next tokens, run starts, parent end) of a precomputed child table, or None."""
        lo, hi = span
        if depth == 1 and hi - lo > NARROW:
            a = self._tok_at(lo, 0)
            i, j = int(self.l1_off[a]), int(self.l1_off[a + 1])
            return self.l1_next[i:j], self.l1_start[i:j], hi
        if depth in LEVELS and hi - lo > WIDE:
            los = getattr(self, f"l{depth}_lo")
            k = int(np.searchsorted(los, lo))
            if k < los.size and los[k] == lo:
                off = getattr(self, f"l{depth}_off")
                i, j = int(off[k]), int(off[k + 1])
                return (getattr(self, f"l{depth}_next")[i:j],
                        getattr(self, f"l{depth}_start")[i:j], hi)
        return None

    def child(self, span: tuple[int, int], depth: int, token: int) -> tuple[int, int]:
        """The interval of prefix + [token] inside `span` (empty when absent)."""
        lo, hi = span
        if lo >= hi:
            return (0, 0)
        if depth == 0:
            return (int(self.unigram[token]), int(self.unigram[token + 1]))
        table = self._table(span, depth)
        if table is not None:
            nxt, starts, end = table
            k = int(np.searchsorted(nxt, nxt.dtype.type(token)))
            if k == nxt.size or nxt[k] != token:
                return (0, 0)
            return (int(starts[k]), int(starts[k + 1]) if k + 1 < nxt.size else end)
        if hi - lo <= MATERIALIZE:
            nxt = self._next(lo, hi, depth)
            a, b = np.searchsorted(nxt, [token, token + 1])
            return (lo + int(a), lo + int(b))
        a = self._bsearch(lo, hi, depth, token, right=False)
        return (a, self._bsearch(a, hi, depth, token, right=True))

    def continuations(self, span: tuple[int, int], depth: int) -> np.ndarray:
        """Sorted distinct tokens following the prefix of `span` (int64)."""
        lo, hi = span
        if lo >= hi:
            return np.empty(0, dtype=np.int64)
        if depth == 0:
            return self.occurring
        table = self._table(span, depth)
        if table is not None:
            return table[0].astype(np.int64)
        if hi - lo <= MATERIALIZE:
            nxt = self._next(lo, hi, depth)
            toks = nxt[np.concatenate([[0], np.flatnonzero(np.diff(nxt)) + 1])]
            return toks[toks >= 0]
        out, i = [], lo  # gallop over runs: O(distinct * log width)
        while i < hi:
            t = self._tok_at(i, depth)
            if t >= 0:
                out.append(t)
            i = self._bsearch(i, hi, depth, t, right=True)
        return np.asarray(out, dtype=np.int64)

    def doc_ids(self, span: tuple[int, int]) -> np.ndarray:
        """Sorted distinct (global) passage numbers of the occurrences in `span`."""
        lo, hi = span
        if lo >= hi:
            return np.empty(0, dtype=np.int64)
        docs = np.searchsorted(self.doc_starts, self.sa[lo:hi], side="right") - 1
        return np.unique(docs) + self.doc_offset


class CorpusIndex:
    """The knowledge base's token stream, searchable by prefix (see the module docstring).

    A pattern matches inside one stored passage ``[bos] doc [eos]``: it may end with EOS but never
    runs past it, so shards (which never split a passage) answer exactly like one index. Passages
    are numbered 0..num_docs-1 in build order; `ids` maps them to the KB's passage ids,
    which is what `docs` returns.
    """

    def __init__(self, shards: list[_Shard], header: dict, ids: np.ndarray):
        self.shards = shards
        self.header = header
        self.ids = ids
        self.eos = int(header["eos"])
        self.bos = header["bos"]
        self.vocab_size = int(header["vocab_size"])

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
            if acc + s > cap:
                groups.append((start, i))
                start, acc = i, 0
            acc += s
        groups.append((start, len(docs)))
        head = np.array([bos] if bos is not None else [], dtype=np.int64)
        tail = np.array([eos], dtype=np.int64)

        def pieces(a: int, b: int):  # [bos] doc [eos] ... as int64, ~64K passages per C call
            for c in range(a, b, 1 << 13):
                yield np.concatenate([x for d in docs[c:min(c + (1 << 13), b)]
                                      for x in (head, d, tail)]).astype(np.int64, copy=False)

        if vocab_size is None:
            vocab_size = max(int(p.max()) for p in pieces(0, len(docs))) + 1
        dtype = _token_dtype(vocab_size)
        shards = []
        for a, b in tqdm(groups, desc="index shards", disable=not progress):
            text = np.empty(int(sizes[a:b].sum()), dtype=dtype)
            o = 0
            for piece in pieces(a, b):  # validate, then narrow: no n-sized int64 stream
                if piece.min() < 0 or piece.max() >= vocab_size:
                    bad = int(piece[(piece < 0) | (piece >= vocab_size)][0])
                    raise IndexError_(f"token ids must lie in [0, {vocab_size}); found {bad}")
                text[o:o + piece.size] = piece
                o += piece.size
            del piece
            starts = np.zeros(b - a, dtype=np.uint32 if text.size < 2**32 else np.int64)
            np.cumsum(sizes[a:b - 1], out=starts[1:])
            shards.append(_Shard.build(text, starts, vocab_size, doc_offset=a, eos=eos))
        header = {"format": FORMAT, "version": VERSION, "eos": int(eos), "bos": bos,
                  "vocab_size": vocab_size, "dtype": dtype.name, "num_docs": len(docs),
                  "num_tokens": int(sizes.sum()), "shards": len(shards)}
        ids_arr = np.arange(len(docs), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if ids_arr.shape != (len(docs),):
            raise IndexError_(f"ids has {ids_arr.size} entries for {len(docs)} passages")
        return cls(shards, header, ids_arr)

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
        parts = [s.continuations(sp, state.depth) for s, sp in zip(self.shards, state.spans,
                                                                   strict=True)]
        parts = [p for p in parts if p.size]
        if not parts:
            return np.empty(0, dtype=np.int64)
        return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))

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
        return sum(getattr(s, f).nbytes for s in self.shards for f in _Shard.FILES) + \
            self.ids.nbytes

    # ------------------------------------------------------------------------------ save, load
    def save(self, directory: str | Path) -> Path:
        """Plain ``.npy`` files plus ``index.json`` (format, version, sizes, sha256 per file),
        written last so a partly written folder never loads."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = {}
        arrays = {"ids.npy": self.ids}
        for k, s in enumerate(self.shards):
            arrays |= {f"shard{k}_{f}.npy": getattr(s, f) for f in _Shard.FILES}
        for name, arr in arrays.items():
            with atomic_path(d / name) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(arr))
            files[name] = {"bytes": (d / name).stat().st_size, "sha256": _sha256(d / name)}
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
        shards = [_Shard({f: arrays[f"shard{k}_{f}.npy"] for f in _Shard.FILES},
                         header["vocab_size"], off, header["eos"])
                  for k, off in enumerate(header.pop("doc_offsets"))]
        header.pop("files")
        return cls(shards, header, np.asarray(arrays["ids.npy"]))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
