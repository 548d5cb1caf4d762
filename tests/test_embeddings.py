"""KB passage embeddings: nested KBs reuse vectors, the cache round-trips, bf16 stays close."""

import numpy as np
import pandas as pd
import pytest

from gemkr.embeddings import encode, minilm_encoder, passage_embeddings

TEXTS = ["banana: elongated crescent-shaped yellow fruit",
         "bicycle: a wheeled vehicle moved by foot pedals",
         "owl: nocturnal bird of prey with large eyes",
         "harp: a stringed instrument with a triangular frame",
         "anvil: a heavy block of iron on which metal is hammered",
         "kayak: a small canoe made of a light frame covered with skins"]


@pytest.fixture(scope="module")
def encoder():
    return minilm_encoder()


def test_nested_kbs_reuse_vectors_and_cache(encoder, tmp_path):
    big = pd.DataFrame({"pid": range(6), "text": TEXTS})
    small = big.iloc[[4, 1, 2]].reset_index(drop=True)
    embs, table = passage_embeddings({"S": small, "L": big}, encoder, tmp_path)
    assert list(embs) == ["S", "L"] and embs["L"].shape == (6, 384)
    assert table.set_index("kb")["embedded"].to_dict() == {"L": 6, "S": 0}  # largest first
    assert table.set_index("kb")["passages_per_s"].isna().to_dict() == {"L": False, "S": True}
    np.testing.assert_array_equal(embs["S"], embs["L"][[4, 1, 2]])
    direct = encode(encoder, small["text"], fast=False)
    assert (embs["S"] * direct).sum(1).min() > 0.999  # bf16 autocast vs float32
    again, table2 = passage_embeddings({"S": small, "L": big}, encoder, tmp_path)
    assert table2["cached"].all()
    np.testing.assert_array_equal(again["L"], embs["L"])
    changed = big.assign(text=big["text"].str.upper())
    _, table3 = passage_embeddings({"L": changed}, encoder, tmp_path)
    assert not table3["cached"].any(), "other texts -> other key -> recomputed"


def test_encode_keeps_input_order(encoder):
    texts = sorted(TEXTS, key=len, reverse=True)  # the encoder batches in length order
    together = encode(encoder, texts, batch_size=2, fast=False)
    alone = np.concatenate([encode(encoder, [t], fast=False) for t in texts])
    assert (together * alone).sum(1).min() > 0.9999
