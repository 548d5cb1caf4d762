"""One path from a picture to GeMKR's inputs and passages, whoever asks.

A benchmark picture given to `Retriever` by path, as a PIL image and as an RGB array must give
the same detections, caption, crops' features, box features and passages; and the notebooks'
route over the same pictures (02's `detect.predict`, 04's `examples.scene_inputs`, the input text
of `detect.with_captions`, 05's `evaluate.gemkr_search`) must give what the retriever gives.
The `smoke` models (trained here when missing, ~2 min) are used with the detector's threshold at
1e-6: its one tiny epoch finds nothing at the profile's threshold, and its faint boxes still
depend on every pixel, so a route that swapped red and blue (ultralytics reads arrays as BGR)
would move them. The swapped picture is checked to move them."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gemkr import detect, evaluate, examples, probe
from gemkr.decoding import DecodeConfig
from gemkr.retriever import Retriever

QUESTION = "What is the object on the left used for?"


@pytest.fixture(scope="module")
def retriever(smoke_stages):
    smoke_stages("01", "02", "03", "04")
    r = Retriever.load("smoke")
    r.cfg = dataclasses.replace(r.cfg, det_conf=1e-6, caption_conf=1e-6)
    return r


def test_path_pil_and_array_give_the_same_detections_features_and_passages(retriever):
    path = retriever.p.bench.scenes["image_path"].iloc[0]
    with Image.open(path) as im:
        pil = im.copy()
    routes = {"path": path, "str": str(path), "PIL": pil, "array": np.asarray(pil.convert("RGB"))}
    scenes = {name: retriever.scene(image) for name, image in routes.items()}
    ref = scenes["path"]
    assert len(ref["detections"]) >= 2, "the test needs boxes to compare"
    for name, s in scenes.items():
        pd.testing.assert_frame_equal(s["detections"], ref["detections"], obj=name)
        assert s["caption"] == ref["caption"], name
        for key in ("images", "objects", "mask", "geometry"):
            assert torch.equal(s[key], ref[key]), (name, key)
    found = {name: retriever.retrieve(s, QUESTION, kb="KB-S", k=5) for name, s in scenes.items()}
    assert len(found["path"]) > 0
    for name, table in found.items():
        pd.testing.assert_frame_equal(table, found["path"], obj=name)
    # the control: the same array with red and blue swapped is another picture to the detector
    bgr = retriever.scene(np.ascontiguousarray(routes["array"][..., ::-1]))
    assert not bgr["detections"][["conf", "x0", "y0"]].equals(ref["detections"][["conf", "x0",
                                                                                    "y0"]])


def test_the_notebooks_route_gives_what_the_retriever_gives(retriever):
    r, cfg = retriever, retriever.cfg
    bench = r.p.bench
    scenes = bench.scenes.head(3).reset_index(drop=True)
    part = dataclasses.replace(bench, scenes=scenes)  # the benchmark, three of its pictures
    # one picture per detector call and one picture's crops per ViT call, as the retriever
    # runs them: the same arithmetic, so the results must be equal to the last bit (a route
    # that swaps red and blue moves this detector's scores by ~1e-7 relative: measured)
    dets, _ = detect.predict(r.yolo, part, imgsz=cfg.det_imgsz, max_det=cfg.max_objects,
                             conf=cfg.det_conf, batch=1)  # 02
    captions = detect.scene_captions(dets, scenes["scene_id"], min_score=cfg.caption_conf)
    inputs = examples.scene_inputs(part, dets, r.p.clip.visual, cfg.vit_image_size,
                                   cfg.max_objects, crops_per_batch=1)  # 04
    for row, sid in enumerate(scenes["scene_id"].tolist()):
        mine = r.scene(scenes["image_path"].iloc[row])
        ours = dets[dets["scene_id"] == sid]
        assert len(ours) >= 2 and ours["label"].tolist() == mine["detections"]["label"].tolist()
        np.testing.assert_array_equal(ours[["score", "x0", "y0", "x1", "y1"]].to_numpy(),
                                      mine["detections"][["conf", "x0", "y0", "x1", "y1"]]
                                      .to_numpy())
        assert captions[sid] == mine["caption"]
        for key in ("images", "mask", "objects", "geometry"):
            assert torch.equal(inputs[key][row], mine[key][0]), key
    # the text the model reads, and the ranking of its clues' passages (05)
    sid = int(scenes["scene_id"].iloc[0])
    q = pd.DataFrame({"qid": [0], "scene_id": [sid], "question": [QUESTION], "caption": [""]})
    # as `trained.Pipeline.questions` makes them: the text and the caption's names
    q = examples.model_questions(q, captions, cfg.use_caption,
                                 probe.scene_labels(dets, cfg.caption_conf))
    assert q["caption_names"].iloc[0] == r.scene(scenes["image_path"].iloc[0])["names"]
    assert q["text"].iloc[0] == detect.input_text(QUESTION, r.scene(scenes["image_path"].iloc[0])
                                                  ["caption"])
    run = evaluate.gemkr_search(r.p.model, inputs, q, r.p.indexes["KB-S"],
                                DecodeConfig.from_config(cfg))
    top = r.retrieve(scenes["image_path"].iloc[0], QUESTION, kb="KB-S", k=5)
    assert [int(x) for x in top["passage_id"]] == run.ranked[0][:5]


def test_a_query_that_reads_a_setting_no_key_covers_fails(retriever, monkeypatch):
    """`Retriever.scene` / `retrieve` may read only settings the loaded models' keys cover (or
    decoding settings): a crop setting read at query time but in no key is named."""
    from gemkr import examples, trained

    inputs = examples.picture_inputs

    def reads_more(*args, **kwargs):
        _ = retriever.cfg.eval_ks
        return inputs(*args, **kwargs)

    monkeypatch.setattr(examples, "picture_inputs", reads_more)
    picture = retriever.p.bench.scenes["image_path"].iloc[0]
    with pytest.raises(trained.CacheKeyError, match=r"Retriever.scene read \['eval_ks'\]"):
        retriever.scene(picture)
    with pytest.raises(trained.CacheKeyError, match=r"read \['eval_ks'\]"):
        retriever.retrieve(picture, QUESTION, kb="KB-S", k=3)
