"""Detection: export format, offline training, confidence order, captions."""

import socket

import numpy as np
import pandas as pd
import pytest
import yaml

import gemkr
from gemkr import detect
from gemkr.data import benchmark


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    content = benchmark._build_okmoji(gemkr.get_config("smoke"), root)
    (root / "content.json").write_text(__import__("json").dumps(content))
    return benchmark.load_benchmark(root)


def test_export_writes_yolo_labels(bench, tmp_path):
    data_yaml = detect.export_dataset(bench, tmp_path / "ds", splits=("train", "val"))
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["train"] == "images/train" and len(spec["names"]) == len(bench.objects)
    scene = bench.scenes[bench.scenes["split"] == "train"].iloc[0]
    stem = scene.image_path.rsplit("/", 1)[-1][:-4]
    lines = (tmp_path / "ds" / "labels" / "train" / f"{stem}.txt").read_text().split("\n")[:-1]
    assert len(lines) == len(scene.objs)
    cls, cx, cy, w, h = lines[0].split()
    x0, y0, x1, y1 = scene.boxes[0]
    size = gemkr.get_config("smoke").image_size
    assert int(cls) == scene.objs[0]
    assert np.allclose([float(cx), float(w)], [(x0 + x1) / 2 / size, (x1 - x0) / size], atol=1e-5)
    assert (tmp_path / "ds" / "images" / "train" / f"{stem}.png").exists()


def test_training_and_prediction_never_touch_the_network(bench, tmp_path, monkeypatch):
    attempts = []
    real = socket.socket.connect

    def record(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError("network disabled in tests")
        return real(self, address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", record)
    data_yaml = detect.export_dataset(bench, tmp_path / "ds", splits=("train", "val"))
    weights, log = detect.train_yolo(data_yaml, tmp_path / "runs", epochs=1, imgsz=64, seed=0)
    assert weights.exists() and len(log) == 1
    model = detect.load_yolo(weights)
    dets, ms = detect.predict(model, bench, imgsz=64, conf=0.0, max_det=10)
    assert attempts == [], f"ultralytics tried to reach {attempts}"
    assert ms > 0 and set(dets["scene_id"]) <= set(bench.scenes["scene_id"])
    for _, g in dets.groupby("scene_id"):  # confidence order = rank order, at most 10
        assert g["rank"].tolist() == list(range(len(g))) and len(g) <= 10
        assert g["score"].is_monotonic_decreasing
    # `gold_recall` filters one prediction by score: that must equal predicting at the threshold
    t = float(dets["score"].median())
    above, _ = detect.predict(model, bench, imgsz=64, conf=t, max_det=10)
    kept = dets[dets["score"] >= t]
    assert len(above) > 0 and len(kept) == len(above)
    assert np.allclose(kept[["x0", "y0", "x1", "y1"]].to_numpy(),
                       above[["x0", "y0", "x1", "y1"]].to_numpy(), atol=1e-3)
    assert not (tmp_path.parent / "runs").exists()


def test_oracle_order_and_captions(bench):
    dets = detect.oracle_detections(bench)
    for _, g in dets.groupby("scene_id"):
        area = (g["x1"] - g["x0"]) * (g["y1"] - g["y0"])
        assert area.is_monotonic_decreasing
    assert detect.caption(["motorcycle", "palm", "motorcycle"]) == \
        "a picture of a motorcycle and a palm"
    assert detect.caption(["ant", "bee", "owl"]) == "a picture of an ant, a bee and an owl"
    assert detect.caption([]) == "a picture"
    caps = detect.scene_captions(dets, bench.scenes["scene_id"])
    assert set(caps) == set(bench.scenes["scene_id"]) and all(c.startswith("a picture") for c in
                                                              caps.values())


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(detect.DetectorFileError, match="nope.pt not found"):
        detect.load_yolo(tmp_path / "nope.pt")


def test_detection_frame_columns():
    assert list(pd.DataFrame(columns=detect.DET_COLUMNS).columns)[:3] == ["scene_id", "rank", "obj"]


def test_captions_join_questions(bench):
    caps = detect.scene_captions(detect.oracle_detections(bench), bench.scenes["scene_id"])
    q = detect.with_captions(bench.questions, caps)
    row = q.iloc[0]
    assert row.caption == caps[row.scene_id] and row.text == f"{row.question} {row.caption}"


def test_gold_recall_counts_what_each_threshold_keeps(bench):
    dets = detect.oracle_detections(bench)
    # exact boxes with made-up scores: the object of rank r scores 0.9 ** r
    dets = dets.assign(score=0.9 ** dets["rank"])
    top = float(dets["score"].max())
    table = detect.gold_recall(bench, dets, [0.0, 0.85, top + 0.01], split="test")
    assert table["threshold"].tolist() == [0.0, 0.85, top + 0.01]
    first, mid, none = table.to_dict("records")
    assert first["object_detected"] == 1.0 and first["caption_names_object"] == 1.0
    assert none["object_detected"] == 0.0 and none["boxes_per_scene"] == 0.0
    # at 0.85 only ranks 0 and 1 remain: a question is covered at least when its object is one
    q = bench.split("test")
    rank = dets.set_index(["scene_id", "obj"])["rank"]
    floor = np.mean([rank.get((s, o), 99) <= 1 for s, o in zip(q.scene_id, q.target_obj,
                                                                 strict=True)])
    assert floor <= mid["object_detected"] <= 1.0 and 0 < floor < 1
    test_scenes = set(q.scene_id)
    assert mid["boxes_per_scene"] == pytest.approx(
        ((dets["rank"] <= 1) & dets["scene_id"].isin(test_scenes)).sum() / len(test_scenes))


def test_captions_name_the_confident_labels_in_confidence_order():
    """Rows in any order: the caption follows each scene's rank (confidence) order, keeps only
    the labels at or above `min_score`, and a scene with none left reads 'a picture'."""
    rows = [(7, 2, 3, "owl", 0.30, 0, 0, 1, 1), (7, 0, 1, "teapot", 0.90, 0, 0, 1, 1),
            (9, 0, 4, "ant", 0.10, 0, 0, 1, 1), (7, 1, 2, "banana", 0.50, 0, 0, 1, 1),
            (7, 3, 5, "bee", 0.06, 0, 0, 1, 1)]
    dets = pd.DataFrame(rows, columns=detect.DET_COLUMNS).sample(frac=1.0, random_state=1)
    assert detect.labels_by_scene(dets) == {7: ["teapot", "banana", "owl", "bee"], 9: ["ant"]}
    caps = detect.scene_captions(dets, [7, 9, 11], min_score=0.25)
    assert caps == {7: "a picture of a teapot, a banana and an owl", 9: "a picture",
                    11: "a picture"}


def test_boxed_matches_each_drawn_object_to_its_most_overlapping_detection():
    from gemkr.detect import iou
    from gemkr.retriever import boxed

    drawn = pd.DataFrame({"name": ["banana", "giraffe"], "x0": [0, 100], "y0": [0, 100],
                          "x1": [50, 150], "y1": [50, 150]})
    dets = pd.DataFrame({"rank": [0, 1], "label": ["banana", "hot pepper"], "conf": [0.7, 0.2],
                         "x0": [2, 90], "y0": [2, 80], "x1": [52, 130], "y1": [50, 120]})
    out = boxed(drawn, dets).set_index("drawn")
    assert out.at["banana", "detected_as"] == "banana" and out.at["banana", "found"]
    assert out.at["banana", "best_iou"] == pytest.approx(iou((0, 0, 50, 50), (2, 2, 52, 50)))
    giraffe = out.loc["giraffe"]  # only the pepper box touches it, far below IoU 0.5
    assert giraffe.detected_as == "hot pepper" and not giraffe.found
    assert giraffe.best_iou == pytest.approx(iou((100, 100, 150, 150), (90, 80, 130, 120)))
    for none in (boxed(drawn, dets.iloc[:0]), boxed(drawn, dets.assign(x0=300, x1=310))):
        assert not none.found.any() and none.detected_as.isna().all()
        assert (none.best_iou == 0).all()
