"""BM25 and dense text baselines on a tiny KB: they find the obvious passage."""

import pandas as pd

from gemkr.baselines import BM25, DenseText

KB = pd.DataFrame({"pid": [10, 20, 30, 40],
                   "text": ["banana: elongated crescent-shaped yellow fruit",
                            "bicycle: a wheeled vehicle moved by foot pedals",
                            "owl: nocturnal bird of prey with large eyes",
                            "harp: a stringed instrument with a triangular frame"]})


def test_bm25_ranks_the_matching_passage_first():
    ranked, seconds = BM25(KB).search(["which yellow fruit is crescent-shaped",
                                       "a vehicle with pedals"], k=3)
    assert [r[0] for r in ranked] == [10, 20] and all(len(r) == 3 for r in ranked)
    assert seconds >= 0


def test_dense_text_with_packaged_minilm():
    ranked, _ = DenseText(KB).search(["a night bird that hunts", "music played by plucking"],
                                     k=2)
    assert [r[0] for r in ranked] == [30, 40]


def test_random_floor_and_oracle_queries():
    from gemkr.baselines import RandomFloor, oracle_queries

    ranked, _ = RandomFloor(KB, seed=1).search(["a", "b"], k=3)
    assert all(len(set(r)) == 3 and set(r) <= set(KB["pid"]) for r in ranked)
    q = pd.DataFrame({"target_name": ["owl"], "question": ["What does it eat?"]})
    assert BM25(KB).search(oracle_queries(q), k=1)[0] == [[30]]
