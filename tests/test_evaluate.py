"""The scoring harness: per-category scores and latency, checked by hand."""

import time

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
    slow = evaluate.latency(lambda i: time.sleep(0.005), n_queries=50, sample=5, seed=3)
    assert 5.0 <= slow["latency_ms_p50"] <= slow["latency_ms_p95"] < 1000.0, "it measures time"
    again = []
    evaluate.latency(again.append, n_queries=50, sample=7, seed=3)
    assert again == seen


def test_by_ref_kind_scores_each_kind_and_all():
    q = pd.DataFrame({"gold_pid": [1, 2, 3, 4], "ref_kind": ["left", "left", "single", "top"]})
    runs = {"m": evaluate.Run("m", [[1], [9, 8, 7, 6, 5, 2], [7, 3], []], 0.0)}
    out = evaluate.by_ref_kind(runs, q).set_index("ref_kind")
    assert out.loc["left", "R@1"] == 0.5 and out.loc["left", "R@5"] == 0.5
    assert out.loc["single", "R@1"] == 0.0 and out.loc["single", "R@5"] == 1.0
    assert out.loc["all", "n_queries"] == 4 and out.loc["all", "R@5"] == 0.5
    assert "ΔR@1" not in out, "no paired columns without `against`"


def test_by_ref_kind_paired_against_a_method_per_kind():
    import numpy as np

    rng = np.random.default_rng(0)
    n = 90
    q = pd.DataFrame({"gold_pid": np.arange(n), "ref_kind": rng.choice(["a", "b", "c"], n)})
    runs = {name: evaluate.Run(name, [[g if rng.random() < p else -1] for g in range(n)], 0.0)
            for name, p in (("m", 0.6), ("ref", 0.4))}
    out = evaluate.by_ref_kind(runs, q, against="ref", seed=1)
    for _, part in out.groupby("ref_kind"):
        m, ref = part.set_index("method").loc["m"], part.set_index("method").loc["ref"]
        assert m["ΔR@1"] == pytest.approx(m["R@1"] - ref["R@1"]), "difference of the kind's R@1"
        assert m["ci95_low"] <= m["ΔR@1"] <= m["ci95_high"]
        assert np.isnan(ref["ΔR@1"]) and (part["against"] == "ref").all()
    with pytest.raises(KeyError, match="no such run"):
        evaluate.by_ref_kind(runs, q, against="CLIP")


def test_clip_over_detected_crops_matches_encode_image_and_merges_by_best_crop(tmp_path):
    """The crop query is the tower's own embedding (ln_post + proj of the raw CLS that
    `encode_crops` stores); a passage scores the best of its scene's crops; a scene without
    detections retrieves nothing."""
    import numpy as np
    import torch

    import gemkr
    from gemkr.vision import create_clip, encode_crops

    torch.manual_seed(0)
    cfg = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4,
                           vit_layers=2)
    clip, _ = create_clip(cfg, tmp_path)
    clip.eval()
    crops = torch.randn(3, 3, 32, 32)
    raw = encode_crops(clip.visual, crops)
    with torch.no_grad():
        direct = clip.encode_image(crops, normalize=True).numpy()

    class Dense:  # the passage side: three "passages" equal to the crops' own embeddings
        pids = np.array([10, 11, 12])

        class index:  # noqa: N801 (faiss-like)
            @staticmethod
            def search(q, k):
                s = q @ direct.T
                order = np.argsort(-s, axis=1)[:, :k]
                return np.take_along_axis(s, order, 1), order

    dense = evaluate.ClipDense(clip, None, Dense())
    objects = torch.zeros(2, 2, raw.shape[1])
    objects[0, 0], objects[0, 1], objects[1, 0] = raw[2], raw[0], raw[1]
    mask = torch.tensor([[True, True], [False, False]])
    ranked, _ = dense.search_crops(objects, mask, k=3)
    assert ranked[1] == []
    assert set(ranked[0][:2]) == {12, 10} and len(ranked[0]) == 3
    with torch.no_grad():
        emb = torch.nn.functional.normalize(clip.visual.ln_post(raw) @ clip.visual.proj, dim=-1)
    assert np.allclose(emb.numpy(), direct, atol=1e-5)
