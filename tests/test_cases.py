"""Case picking for notebook 08: successes by gold rank, failures, fill-up, against brute force."""

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from gemkr.cases import gold_ranks, pick_cases


@given(st.lists(st.tuples(st.integers(0, 6), st.lists(st.integers(0, 6), max_size=7,
                                                        unique=True)), min_size=1, max_size=30),
       st.integers(1, 8))
def test_pick_cases_matches_brute_force(items, n):
    questions = pd.DataFrame({"gold_pid": [g for g, _ in items]})
    ranked = [r for _, r in items]
    ranks = gold_ranks(questions, ranked)
    assert ranks == [r.index(g) + 1 if g in r else None for g, r in items]
    hits = [i for i, r in enumerate(ranks) if r is not None and r <= 5]
    picked = pick_cases(questions, ranked, n)
    assert len(picked) == min(n, len(items)) and picked.position.is_unique
    n_good = min(len(hits), n // 2)
    best = sorted(hits, key=lambda i: (ranks[i], i))[:n_good]  # best-ranked successes first
    assert picked.position.tolist()[:n_good] == best
    for row in picked.itertuples():
        success = ranks[row.position] is not None and ranks[row.position] <= 5
        assert row.outcome == ("success" if success else "failure")
    # the rest are the first failures in question order, then whatever fills up
    misses = [i for i in range(len(items)) if i not in hits]
    rest = picked.position.tolist()[n_good:]
    assert rest[:min(len(misses), n - n_good)] == misses[:n - n_good]
