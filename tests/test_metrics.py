"""Metrics against hand-computed cases (duplicates, short lists, both relevance modes)."""

import numpy as np
import pytest

from gemkr import metrics as M

RANKED = [[3, 3, 7, 1], [5], [], [2, 9, 4, 8, 6, 1]]
RELEVANT = [{7, 1}, {6}, {1}, {6}]


def test_precision_has_a_fixed_divisor_and_dedups():
    # q0: dedup -> [3, 7, 1]; first 2 = [3, 7] -> 1 hit / 2; q1: 0; q2: 0; q3: [2, 9] -> 0
    assert M.precision_at_k(RANKED, RELEVANT, 2) == pytest.approx((0.5 + 0 + 0 + 0) / 4)
    # k=5: q0 2 hits / 5 (list shorter than k still divides by 5); q3 6 at rank 5 -> 1/5
    assert M.precision_at_k(RANKED, RELEVANT, 5) == pytest.approx((2 / 5 + 0 + 0 + 1 / 5) / 4)


def test_recall_is_a_hit_rate_and_mrr_uses_first_hit():
    assert M.recall_at_k(RANKED, RELEVANT, 1) == 0.0
    assert M.recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 4)
    assert M.recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 4)
    assert M.recall_at_k(RANKED, RELEVANT, 5) <= M.recall_at_k(RANKED, RELEVANT, 10)
    # q0 first hit at rank 2 (after dedup), q3 at rank 5
    assert M.mrr_at_k(RANKED, RELEVANT, 5) == pytest.approx((1 / 2 + 0 + 0 + 1 / 5) / 4)
    assert M.mrr_at_k(RANKED, RELEVANT, 4) == pytest.approx((1 / 2) / 4)


def test_answer_relevance_modes():
    assert M.answer_in_passage("The Banana is yellow", ["banana"])
    assert not M.answer_in_passage("The Banana is yellow", ["banana"], lowercase=False)
    assert not M.answer_in_passage("anything", [""])
    texts = {1: "Bananas grow on herbs", 2: "apples", 3: "banana split"}
    rel = M.answer_relevant([[2, 1, 3, 1]], [["banana"]], texts)
    assert rel == [{1, 3}]


def test_score_run_both_modes():
    texts = {1: "banana: fruit", 2: "apple: fruit", 3: "ant: insect"}
    df = M.score_run([[2, 1], [3]], gold=[1, 1], answers=[["banana"], ["fruit"]], texts=texts,
                     ks=(1, 5))
    gold = df.set_index("relevance").loc["gold_id"]
    assert gold["R@1"] == 0.0 and gold["R@5"] == 0.5 and gold["MRR@5"] == pytest.approx(0.25)
    ans = df.set_index("relevance").loc["answer"]
    assert ans["P@1"] == 0.0 and ans["R@5"] == 0.5 and ans["P@5"] == pytest.approx(0.1)
    assert set(df.columns) >= {"P@1", "R@5", "MRR@5", "n_queries"}


def test_bad_input():
    with pytest.raises(ValueError, match="2 ranked lists for 1"):
        M.recall_at_k([[1], [2]], [{1}], 5)
    with pytest.raises(ValueError, match="k must be"):
        M.precision_at_k([[1]], [{1}], 0)


def test_gold_hits_and_paired_bootstrap():
    from gemkr.metrics import gold_hits, paired_bootstrap

    assert gold_hits([[1, 1, 2], [3], []], [2, 4, 1], k=2).tolist() == [1.0, 0.0, 0.0]
    a = np.array([1, 1, 0, 1, 0, 1, 1, 0] * 10, float)
    same = paired_bootstrap(a, a, n_resamples=200)
    assert same == (0.0, 0.0, 0.0), "identical systems differ by exactly nothing"
    d, lo, hi = paired_bootstrap(a, np.zeros_like(a), n_resamples=500, seed=1)
    assert d == a.mean() and lo < d < hi and lo > 0.4
    # brute-force reference: the same resamples, computed one by one
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(a), size=(50, len(a)))
    ref = np.percentile([(a[i] - 0.5).mean() for i in idx], [2.5, 97.5])
    got = paired_bootstrap(a, np.full_like(a, 0.5), n_resamples=50, seed=3)
    assert np.allclose(got[1:], ref)
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:3])
