"""The scoring harness: per-category scores and latency, checked by hand."""

import pandas as pd
import pytest

from gemkr import evaluate


def test_by_category_scores_each_category_on_its_own_questions():
    q = pd.DataFrame({"gold_pid": [1, 2, 3], "answers": [["a"], ["b"], ["c"]],
                      "category": ["food", "food", "animals"]})
    run = evaluate.Run("m", [[1, 9], [9, 8], [3]], seconds=1.0)
    texts = {1: "a", 2: "b", 3: "c", 8: "x", 9: "y"}
    out = evaluate.by_category(run, q, texts, ks=(1, 5)).set_index("category")
    assert out.loc["food", "R@1"] == 0.5 and out.loc["animals", "R@1"] == 1.0
    assert out.loc["food", "n_queries"] == 2
    assert run.qps == pytest.approx(3.0)


def test_latency_times_single_calls_on_a_fixed_sample():
    seen = []
    lat = evaluate.latency(seen.append, n_queries=50, sample=7, seed=3)
    assert len(seen) == 7 == lat["latency_queries"] and len(set(seen)) == 7
    assert 0 <= lat["latency_ms_p50"] <= lat["latency_ms_p95"]
    again = []
    evaluate.latency(again.append, n_queries=50, sample=7, seed=3)
    assert again == seen
