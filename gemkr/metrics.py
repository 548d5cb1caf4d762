"""Retrieval metrics exactly as the papers compute them (paper-notes §13, traps T8-T9).

Ranked lists are passage ids, best first, de-duplicated in order before scoring (as the official
code does); relevant sets are passage ids. Two relevance modes:

* gold id: the question's gold passage (ReMuQ-style; OKMoji's own ground truth);
* answer substring: a passage is relevant when it contains any answer string (OK-VQA pseudo-
  relevance). ``lowercase=True`` lower-cases both sides as VRR does; ``lowercase=False`` is the
  official GeMKR evaluation (case-sensitive ``in`` on the raw text).

P@k divides by k even when fewer than k passages were returned (official ``eval.py``); R@k is a
hit rate (at least one relevant passage in the first k); MRR@k is the mean reciprocal rank of the
first relevant passage within k (0 when none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def dedup(ranked: Iterable[int]) -> list[int]:
    """Keep the first occurrence of each passage id, in order."""
    return list(dict.fromkeys(int(x) for x in ranked))


def _hits(ranked: Sequence[Sequence[int]], relevant: Sequence[set], k: int) -> list[list[bool]]:
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists for {len(relevant)} relevant sets")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return [[d in rel for d in dedup(r)[:k]] for r, rel in zip(ranked, relevant, strict=True)]


def precision_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[set], k: int) -> float:
    """Mean over queries of (relevant passages in the first k) / k."""
    hits = _hits(ranked, relevant, k)
    return float(np.mean([sum(h) / k for h in hits])) if hits else 0.0


def recall_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[set], k: int) -> float:
    """Share of queries with at least one relevant passage in the first k."""
    hits = _hits(ranked, relevant, k)
    return float(np.mean([any(h) for h in hits])) if hits else 0.0


def mrr_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[set], k: int) -> float:
    """Mean reciprocal rank of the first relevant passage within the first k (0 if none)."""
    hits = _hits(ranked, relevant, k)
    return float(np.mean([1.0 / (h.index(True) + 1) if any(h) else 0.0 for h in hits])) \
        if hits else 0.0


def answer_in_passage(passage: str, answers: Iterable[str], *, lowercase: bool = True) -> bool:
    """OK-VQA pseudo-relevance: does the passage contain any (non-empty) answer string?"""
    if lowercase:
        passage = passage.lower()
        answers = [a.lower() for a in answers]
    return any(a and a in passage for a in answers)


def answer_relevant(ranked: Sequence[Sequence[int]], answers: Sequence[Sequence[str]],
                    texts: Mapping[int, str], *, lowercase: bool = True) -> list[set]:
    """Relevant sets under answer-substring relevance, judged on the retrieved passages."""
    return [{d for d in dedup(r) if answer_in_passage(texts[d], a, lowercase=lowercase)}
            for r, a in zip(ranked, answers, strict=True)]


def score_run(ranked: Sequence[Sequence[int]], gold: Sequence[int],
              answers: Sequence[Sequence[str]], texts: Mapping[int, str],
              ks: Sequence[int] = (1, 5, 10), lowercase: bool = True) -> pd.DataFrame:
    """P@k, R@k and MRR@k of a whole run in both relevance modes; one row per mode."""
    modes = {"gold_id": [{int(g)} for g in gold],
             "answer": answer_relevant(ranked, answers, texts, lowercase=lowercase)}
    rows = []
    for mode, relevant in modes.items():
        row = {"relevance": mode, "n_queries": len(ranked)}
        for k in ks:
            row[f"P@{k}"] = precision_at_k(ranked, relevant, k)
            row[f"R@{k}"] = recall_at_k(ranked, relevant, k)
            row[f"MRR@{k}"] = mrr_at_k(ranked, relevant, k)
        rows.append(row)
    return pd.DataFrame(rows)


def gold_hits(ranked: Sequence[Sequence[int]], gold: Sequence[int], k: int) -> np.ndarray:
    """Per query: 1.0 when the gold passage is among the first `k` (de-duplicated) results."""
    return np.asarray([float(int(g) in dedup(r)[:k]) for r, g in zip(ranked, gold, strict=True)])


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Mean difference ``mean(a) - mean(b)`` of per-query scores on the *same* queries, with a
    percentile bootstrap interval: queries are resampled with replacement, the pair kept
    together, so the interval reflects only how the two systems differ on shared questions."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores need two equal, non-empty 1-d arrays; got {a.shape}, "
                         f"{b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(lo), float(hi)
