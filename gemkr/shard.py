"""Suffix-array shards of the corpus index: the sort, the child tables and interval queries.

One `Shard` holds a token stream ``[bos] doc [eos] ...``, its suffix array and the lookup tables
that make wide intervals O(1); `gemkr.index.CorpusIndex` combines shards into one index. Why the
kit owns this code, and the layout, are explained in `gemkr.index`.
"""

from __future__ import annotations

import ctypes

import numpy as np

MATERIALIZE = 1 << 15  # intervals up to this wide are scanned with one vectorised gather
WIDE = 1 << 11  # bigram / trigram intervals wider than this get a precomputed child table
NARROW = 128  # tokens occurring at most this often get no bigram table (scanned instead)
LEVELS = (2, 3, 4, 5)  # depths with child tables for wide parents (few entries, big savings)
_CHUNK = 1 << 20
_RUN_CHUNK = 1 << 18


class IndexError_(ValueError):
    """A corrupt, truncated or wrong-version index file, or an invalid token id."""


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


class Shard:
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
        # the positions in doc_starts' own dtype: a needle of another dtype (int32 SA entries
        # against uint32 starts) makes numpy cast the whole starts array on every call, O(passages)
        pos = self.sa[lo:hi].astype(self.doc_starts.dtype, copy=False)
        docs = np.searchsorted(self.doc_starts, pos, side="right") - 1
        return np.unique(docs) + self.doc_offset
