"""Baseline retrievers scored with the same harness as GeMKR (DESIGN §6): BM25 (bm25s) and dense
text retrieval (the packaged MiniLM + faiss; the KB's vectors come from `embeddings`). Each returns
ranked passage ids per query, plus the seconds it took, so notebook 05 can put latency side by
side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .embeddings import encode, minilm_encoder
from .hardware import cores


class BM25:
    """Okapi BM25 over the KB passages (bm25s, lucene variant, English stopwords)."""

    def __init__(self, kb: pd.DataFrame):
        import logging

        import bm25s

        # bm25s sets its logger to DEBUG on import: its index messages would fill the notebooks
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.pids = kb["pid"].to_numpy()
        self.model = bm25s.BM25()
        self.model.index(_bm25_tokens(kb), show_progress=False)

    def search_scored(self, queries: Sequence[str], k: int = 10
                      ) -> tuple[list[list[tuple[int, float]]], float]:
        """Per query the top-k (passage id, BM25 score) pairs, and the seconds it took."""
        import bm25s

        start = time.perf_counter()
        tokens = bm25s.tokenize(list(queries), show_progress=False)
        k = min(k, len(self.pids))
        docs, scores = self.model.retrieve(tokens, k=k, show_progress=False,
                                           n_threads=cores())  # 2x on 2 cores
        hits = [list(zip(self.pids[row].tolist(), np.asarray(sc, float).tolist(), strict=True))
                for row, sc in zip(np.asarray(docs), np.asarray(scores), strict=True)]
        return hits, time.perf_counter() - start

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[list[list[int]], float]:
        hits, seconds = self.search_scored(queries, k)
        return [[pid for pid, _ in h] for h in hits], seconds


def _bm25_tokens(kb, chunk: int = 65536):
    """bm25s's tokens of a KB's passages: a table's at once; a `passage_file.PassageFile`'s
    chunk by chunk as the file streams, each chunk's vocabulary mapped onto one (the same
    tokens, so the same scores: bm25s.tokenize's lowercase, word pattern and stopwords)."""
    import bm25s
    from bm25s.tokenization import Tokenized

    from .passage_file import PassageFile

    if not isinstance(kb, PassageFile):
        return bm25s.tokenize(kb["text"].tolist(), show_progress=False)
    vocab: dict[str, int] = {}
    ids: list[list[int]] = []
    for _, texts in kb.rows(chunk):
        part = bm25s.tokenize(texts, show_progress=False)
        local = np.empty(len(part.vocab), np.int64)
        for word, i in part.vocab.items():
            local[i] = vocab.setdefault(word, len(vocab))
        ids.extend(local[np.asarray(d, np.int64)].tolist() for d in part.ids)
    return Tokenized(ids=ids, vocab=vocab)


class DenseText:
    """Dense retrieval: MiniLM embeddings (L2-normalised) and an exact inner-product faiss index."""

    def __init__(self, kb: pd.DataFrame, encoder=None, batch_size: int = 256,
                 embeddings: np.ndarray | None = None):
        import faiss

        self.encoder = encoder or minilm_encoder()
        self.batch_size = batch_size
        self.pids = kb["pid"].to_numpy()
        emb = self.embed(kb["text"].tolist()) if embeddings is None else embeddings
        if emb.shape[0] != len(self.pids):
            raise ValueError(f"{emb.shape[0]} embeddings for {len(self.pids)} passages")
        self.embeddings = emb
        self.index = faiss.IndexFlatIP(emb.shape[1])
        for s in range(0, len(emb), 1 << 20):  # a memory-mapped KB's vectors: a part at a time
            self.index.add(np.ascontiguousarray(emb[s:s + (1 << 20)], dtype=np.float32))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        # queries in float32 (few); the KB's vectors come from `embeddings.kb_embeddings`
        return encode(self.encoder, texts, batch_size=self.batch_size, fast=False)

    def search_scored(self, queries: Sequence[str], k: int = 10
                      ) -> tuple[list[list[tuple[int, float]]], float]:
        """Per query the top-k (passage id, cosine) pairs, and the seconds it took."""
        start = time.perf_counter()
        scores, idx = self.index.search(self.embed(queries), min(k, len(self.pids)))
        hits = [list(zip(self.pids[row[row >= 0]].tolist(), sc[row >= 0].tolist(), strict=True))
                for row, sc in zip(idx, scores, strict=True)]
        return hits, time.perf_counter() - start

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[list[list[int]], float]:
        hits, seconds = self.search_scored(queries, k)
        return [[pid for pid, _ in h] for h in hits], seconds


class RandomFloor:
    """The chance floor: k distinct random passages per query (seeded)."""

    def __init__(self, kb: pd.DataFrame, seed: int = 0):
        self.pids = kb["pid"].to_numpy()
        self.rng = np.random.default_rng(seed)

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[list[list[int]], float]:
        start = time.perf_counter()
        k = min(k, len(self.pids))
        ranked = [self.pids[self.rng.choice(len(self.pids), k, replace=False)].tolist()
                  for _ in queries]
        return ranked, time.perf_counter() - start


def oracle_queries(questions: pd.DataFrame) -> list[str]:
    """Queries for the oracle-label reference point: the target object's name (never shown to any
    real method), searched with the same retriever as the question baselines."""
    return questions["target_name"].tolist()
