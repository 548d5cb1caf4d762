"""Training examples: scene inputs follow detection order; clue targets are index spans."""

import json

import numpy as np
import torch

import gemkr
from gemkr import detect, examples
from gemkr.data import benchmark
from gemkr.index import CorpusIndex
from gemkr.vision import create_clip


def test_scene_inputs_and_clue_targets(tmp_path):
    cfg = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4)
    content = benchmark._build_okmoji(gemkr.get_config("smoke"), tmp_path / "b")
    (tmp_path / "b" / "content.json").write_text(json.dumps(content))
    bench = benchmark.load_benchmark(tmp_path / "b")
    model, _ = create_clip(cfg, tmp_path / "oc")
    dets = detect.oracle_detections(bench)
    inputs = examples.scene_inputs(bench, dets, model.visual, 32, max_objects=10)
    n_objs = bench.scenes["objs"].map(len).to_numpy()
    assert inputs["mask"].sum(1).tolist() == n_objs.tolist()
    assert torch.all(inputs["objects"][~inputs["mask"]] == 0)
    # each filled slot holds the tower's feature of that detection's crop (batched across
    # scenes, the same numbers as one picture's crops alone), not zeros or another slot's
    from gemkr.vision import encode_crops

    by_scene = {sid: g.sort_values("rank") for sid, g in dets.groupby("scene_id")}
    for i, sid in enumerate(bench.scenes["scene_id"].head(4).tolist()):
        boxes = by_scene[sid][["x0", "y0", "x1", "y1"]].to_numpy()
        crops = examples.crops_of(bench.image(sid), boxes, 32, 10)
        with torch.no_grad():
            own = encode_crops(model.visual, torch.stack(crops))
        got = inputs["objects"][i, :len(crops)]
        assert torch.allclose(got, own, atol=1e-5) and got.abs().sum(1).min() > 0
    # byte-level "tokens" for a quick index over KB-S
    kb = bench.kb["KB-S"]
    docs = [np.frombuffer(t.encode(), dtype=np.uint8).astype(np.uint16) + 3 for t in kb["text"]]
    index = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=259, ids=kb["pid"].to_numpy(),
                              progress=False)
    q = detect.with_captions(bench.questions, detect.scene_captions(dets, bench.scenes.scene_id))
    targets, info = examples.clue_targets(q, index, max_tokens=40, min_tokens=2)
    for t, pid in zip(targets, q["gold_pid"], strict=True):
        gold = index.passage_tokens(index.number_of(pid)).tolist()
        assert gold[:len(t)] == t, "a span from the passage start, in index ids"
    assert info["unique"].mean() > 0.9
    batch = examples.make_batch(q.head(3), inputs, targets[:3])
    assert batch.images.shape == (3, 3, 32, 32) and batch.texts[0].startswith(q.iloc[0].question)
