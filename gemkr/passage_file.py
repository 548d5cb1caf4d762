"""A knowledge base left in its corpus file: the `paper` profile's WK21M (DPR's ``psgs_w100.tsv``,
21M passages, ~13 GB) is never read into a table.

One streaming pass over the file (`PassageFile.scan`, cached) keeps, per passage, its id and the
byte offset of its record: 16 bytes a passage, ~340 MB for WK21M, where a table of the texts
takes tens of GB. Everything else reads the file as it needs it:

* the corpus index streams it (`kb_index.streamed_index`, via `rows`),
* the MiniLM vectors and the BM25 index stream it chunk by chunk (`embeddings`, `baselines`),
* the evaluation reads the texts of the passages a method retrieved (`passage_texts`: a mapping
  pid -> text that seeks to the record), as do the case studies and the retriever.

Duplicates are dropped as `data.kb.deduplicate` drops them from a table (the smallest pid of an
exact text is kept), so both routes hold the same passages in the same order. Written in the kit:
pandas and the csv module read a file whole or forward only; this keeps random access by id.
"""

from __future__ import annotations

import csv
import hashlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import artifacts


class PassageFile:
    """The passages of a corpus file kept there: ids and record offsets in memory, texts read
    on demand. Reads like a KB table where it can (`len`, ``kb["pid"]``); ``kb["text"]`` would
    hold every text, so it raises and names the streaming reads to use instead."""

    def __init__(self, path: Path, pids: np.ndarray, offsets: np.ndarray, header: list[str], *,
                 id_col: str, delimiter: str, key: str, duplicates: pd.DataFrame):
        if len(pids) != len(offsets):
            raise ValueError(f"{len(pids)} passage ids for {len(offsets)} offsets")
        self.path, self.header, self.id_col, self.delimiter = Path(path), header, id_col, delimiter
        self.pids, self.offsets, self.key, self.duplicates = pids, offsets, key, duplicates
        self._row_of: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def scan(cls, path: Path, *, name: str, root: Path, id_col: str = "id",
             delimiter: str = "\t", source: str = "wk21m", max_passages: int | None = None,
             force: bool = False) -> PassageFile:
        """Read `path` once (streamed) and keep its passages' ids and offsets, without exact
        duplicates; cached under ``root/<name>_passages/`` keyed by the file's sha256."""
        from .data.loaders import DatasetError, corpus_records, need_file

        path = need_file(Path(path), source)
        content = artifacts.cache_key(artifacts.sha256_file(path), id_col, delimiter,
                                      max_passages)
        cache = artifacts.stage_cache(Path(root), f"{name.replace('/', '_')}_passages",
                                      key_parts=(content,), force=force,
                                      sources=("passage_file.py", "data/loaders.py"))
        if not cache.valid:
            pids, offsets, digests = array("q"), array("q"), array("Q")
            for pid, text, _, offset in corpus_records(path, id_col, delimiter, max_passages,
                                                       source):
                pids.append(pid)
                offsets.append(offset)
                digests.append(int.from_bytes(
                    hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"))
            pid, offset = np.frombuffer(pids, np.int64), np.frombuffer(offsets, np.int64)
            if not len(pid):
                raise DatasetError(f"{path}: no passages after the header")
            if len(np.unique(pid)) != len(pid):
                raise ValueError(f"{path}: passage ids repeat; each passage needs its own id")
            keep, kept_pid = _smallest_pid_of_each_text(pid, np.frombuffer(digests, np.uint64))
            dups = pd.DataFrame({"kb": name, "pid": pid[~keep], "kept_pid": kept_pid[~keep]})
            with open(path, encoding="utf-8", newline="") as fh:
                header = next(csv.reader(fh, delimiter=delimiter))
            with cache.writing(kb=name, source=str(path), passages=int(keep.sum()),
                               duplicates=len(dups), header=header) as tmp:
                np.save(tmp / "pids.npy", pid[keep])
                np.save(tmp / "offsets.npy", offset[keep])
                artifacts.write_csv(dups, tmp / "duplicates.csv")
        meta = cache.meta
        return cls(path, np.load(cache.path / "pids.npy", mmap_mode="r"),
                   np.load(cache.path / "offsets.npy", mmap_mode="r"), list(meta["header"]),
                   id_col=id_col, delimiter=delimiter, key=content,
                   duplicates=pd.read_csv(cache.path / "duplicates.csv"))

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, column: str) -> pd.Series:
        if column == "pid":
            return pd.Series(np.asarray(self.pids), name="pid")
        if column == "text":
            raise TypeError(f"{self.path.name} stays on disk ({len(self):,} passages): read "
                            "its texts with .rows(chunk) (in order) or passage_texts(kb) (by id)")
        raise KeyError(column)

    def texts_at(self, rows: Sequence[int]) -> list[str]:
        """The texts of passages number `rows` (positions in this KB), read from the file."""
        from .data.loaders import parse_passage, record_at

        out = []
        with open(self.path, "rb") as fh:
            for r in rows:
                offset = int(self.offsets[r])  # (r counts this KB's passages, not the file's rows)
                record = record_at(fh, offset, self.header, self.delimiter)
                out.append(parse_passage(self.path, record, self.id_col,
                                         f"the record at byte {offset}")[1])
        return out

    def row_of(self, pid: int) -> int:
        """The position of passage `pid` in this KB; KeyError when it holds no such passage."""
        if self._row_of is None:
            order = np.argsort(self.pids, kind="stable")
            self._row_of = (np.asarray(self.pids)[order], order)
        sorted_pids, order = self._row_of
        i = int(np.searchsorted(sorted_pids, pid))
        if i == len(sorted_pids) or sorted_pids[i] != pid:
            raise KeyError(pid)
        return int(order[i])

    def rows(self, chunk: int = 4096) -> Iterator[tuple[np.ndarray, list[str]]]:
        """(pids, texts) of `chunk` passages at a time, in order: one forward read of the file
        (the duplicates skipped by their offsets)."""
        from .data.loaders import corpus_records

        k, texts = 0, []
        for _, text, _, offset in corpus_records(self.path, self.id_col, self.delimiter):
            if k + len(texts) == len(self):
                break
            if offset != self.offsets[k + len(texts)]:
                continue  # a duplicate text: not in this KB
            texts.append(text)
            if len(texts) == chunk:
                yield np.asarray(self.pids[k:k + chunk]), texts
                k, texts = k + chunk, []
        if texts:
            yield np.asarray(self.pids[k:k + len(texts)]), texts


def _smallest_pid_of_each_text(pid: np.ndarray, digest: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Which passages to keep (the smallest pid of each text, as `deduplicate`) and, for every
    passage, the pid kept for its text."""
    order = np.lexsort((pid, digest))  # by text digest, then pid
    d = digest[order]
    opens = np.r_[True, d[1:] != d[:-1]]  # the first (smallest pid) of each run of one text
    kept_sorted = pid[order][np.maximum.accumulate(np.where(opens, np.arange(len(d)), 0))]
    kept_pid = np.empty_like(pid)
    kept_pid[order] = kept_sorted
    return kept_pid == pid, kept_pid


class PassageTexts(Mapping):
    """pid -> text of a `PassageFile`, read from the file when asked (the last few kept)."""

    def __init__(self, kb: PassageFile, keep: int = 4096):
        self.kb, self.keep = kb, keep
        self._seen: dict[int, str] = {}

    def __getitem__(self, pid: int) -> str:
        pid = int(pid)
        if pid not in self._seen:
            if len(self._seen) >= self.keep:
                self._seen.pop(next(iter(self._seen)))
            self._seen[pid] = self.kb.texts_at([self.kb.row_of(pid)])[0]
        return self._seen[pid]

    def __iter__(self):
        return iter(np.asarray(self.kb.pids).tolist())

    def __len__(self) -> int:
        return len(self.kb)

    def __contains__(self, pid) -> bool:
        try:
            self.kb.row_of(int(pid))
        except (KeyError, TypeError, ValueError):
            return False
        return True


def passage_texts(kb) -> Mapping[int, str]:
    """pid -> text of a KB: a dict of a table's texts, a `PassageTexts` of a `PassageFile`."""
    if isinstance(kb, PassageFile):
        return PassageTexts(kb)
    return dict(zip(kb["pid"].tolist(), kb["text"].tolist(), strict=True))
