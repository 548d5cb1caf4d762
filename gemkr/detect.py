"""Object detection with ultralytics YOLO (paper-notes §3): boxes, crops and captions per image.

GeMKR's object-aware prefix reads the CLS features of detected objects, and the question it gets
carries a caption. No pretrained YOLO weights exist offline, so CPU profiles train YOLOv8n from its
model YAML (random init) on the benchmark's train/val scenes; `paper` loads a user's weights file.

Offline guarantees (checked by a test with the network blocked): ``YOLO_OFFLINE=1`` (no online
checks or downloads; ultralytics falls back to no font for plot labels), ``YOLO_CONFIG_DIR`` inside
``artifacts/`` (ultralytics keeps a settings file there, not in the user's home), runs written under
the stage's artifact folder, AMP off (its check downloads weights; on CPU it is unused anyway).

Order matters (trap T3): detections are sorted by confidence, so the first two become the LLM's
object tokens. Oracle boxes (exact scene boxes) are ordered by area, largest first.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .hardware import cores
from .paths import REPO_ROOT

DET_COLUMNS = ["scene_id", "rank", "obj", "label", "score", "x0", "y0", "x1", "y1"]
# Everything that shapes a trained detector besides data, epochs, image size and seed. The YOLO
# cache is keyed by this recipe and the benchmark's content hash (not by this file's source), so
# editing plots or captions here does not retrain; change `version` when the export changes.
TRAIN_RECIPE = {
    "version": 1, "model": "yolov8n.yaml", "batch": 32,
    # ultralytics' "auto" optimizer sets lr = 0.002 * 5 / (4 + classes) = 2e-5 for 478 classes,
    # far too low to learn from scratch in a CPU budget
    "optimizer": "AdamW", "lr0": 0.002, "cos_lr": True,
}


def _offline_ultralytics() -> None:
    """Environment for ultralytics, set before it is first imported (here, at the end)."""
    os.environ["YOLO_OFFLINE"] = "1"
    cfg_dir = REPO_ROOT / "artifacts" / "ultralytics"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg_dir))
    os.environ.setdefault("YOLO_VERBOSE", "False")
    # ultralytics patches PIL.Image.open process-wide: on a file Pillow cannot identify it tries
    # `pip install pi-heif` (offline: a ModuleNotFoundError instead of Pillow's own error, seen by
    # every later image read, e.g. the CLI's "is not an image file"). Mark that plugin as handled
    # so Pillow's errors pass through unchanged.
    from ultralytics.utils import patches

    if hasattr(patches, "_pil_plugins_registered"):
        patches._pil_plugins_registered = True
    from ultralytics.utils.tqdm import TQDM

    from .progress import force_off

    force_off(TQDM)  # under TQDM_DISABLE: its image cache bar passes disable=False


def export_dataset(bench, out: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """Write the scenes of `splits` in the ultralytics format; returns the ``data.yaml`` path.

    ``images/<split>/`` holds links to the benchmark's PNGs (copies where links are impossible),
    ``labels/<split>/`` one ``class cx cy w h`` line per box (normalised); class = object row.
    """
    out = Path(out)
    objects = bench.objects
    for split in splits:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for row in bench.scenes[bench.scenes["split"] == split].itertuples():
            src = Path(row.image_path)
            dst = out / "images" / split / src.name
            if not dst.exists():
                try:
                    dst.symlink_to(src)
                except OSError:
                    dst.write_bytes(src.read_bytes())
            w = h = _image_side(src)
            lines = [f"{o} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} "
                     f"{(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}"
                     for o, b in zip(row.objs, row.boxes, strict=True)]
            (out / "labels" / split / f"{src.stem}.txt").write_text("\n".join(lines) + "\n")
    data = {"path": str(out), **{s: f"images/{s}" for s in splits},
            "names": {int(i): str(n) for i, n in zip(objects.index, objects["name"],
                                                       strict=True)}}
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _image_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[0]


def train_yolo(data_yaml: Path, out: Path, *, epochs: int, imgsz: int, seed: int,
               device: str = "cpu") -> tuple[Path, pd.DataFrame]:
    """Train YOLO from its model YAML (random init); returns best weights and per-epoch log."""
    _offline_ultralytics()
    import ultralytics.utils.torch_utils as yolo_torch
    from ultralytics import YOLO

    # ultralytics trains on cpu_count - 1 threads (1 on a 2-core laptop): use every core
    yolo_torch.NUM_THREADS = cores()
    recipe = {k: v for k, v in TRAIN_RECIPE.items() if k not in ("version", "model")}
    model = YOLO(TRAIN_RECIPE["model"])  # architecture only: no weights, nothing downloaded
    model.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, device=device, seed=seed,
                deterministic=True, project=str(out), name="train", exist_ok=True,
                pretrained=False, amp=False, workers=0, plots=False, verbose=False,
                val=True, cache=True, patience=max(epochs, 1),
                warmup_epochs=min(1.0, epochs / 3), **recipe)
    run = Path(out) / "train"
    log = pd.read_csv(run / "results.csv")
    log.columns = [c.strip() for c in log.columns]
    weights = run / "weights" / "best.pt"
    if not weights.exists():
        weights = run / "weights" / "last.pt"
    return weights, log


class DetectorFileError(ValueError):
    """The YOLO weights file is missing, not an ultralytics checkpoint, or not a detector."""


def load_yolo(weights: str | os.PathLike):
    """A YOLO *detection* model from a local weights file (`paper`: the user's); a missing file,
    a file ultralytics cannot read and a classification / segmentation / pose model are named."""
    from .paper_files import SOURCES

    _offline_ultralytics()
    if not Path(weights).is_file():
        raise DetectorFileError(f"YOLO weights {weights} not found: train one in notebook 02 or "
                                "set `yolo_weights` (GEMKR_YOLO_WEIGHTS) to a local ultralytics "
                                f".pt file; source: {SOURCES['yolo']}")
    from ultralytics import YOLO

    try:
        model = YOLO(str(weights))
    except Exception as err:  # not a pickle, a truncated file, another library's checkpoint
        raise DetectorFileError(f"{weights} is not an ultralytics checkpoint ({type(err).__name__}"
                                f": {err}); source: {SOURCES['yolo']}") from err
    if model.task != "detect":
        raise DetectorFileError(f"{weights} is an ultralytics {model.task!r} model; GeMKR needs "
                                "boxes: use a detection model (task 'detect')")
    return model


def result_rows(res, names: list[str], max_det: int) -> list[tuple]:
    """(rank, obj, label, score, x0, y0, x1, y1) of one ultralytics result, by confidence."""
    boxes = res.boxes
    order = np.argsort(-boxes.conf.numpy(), kind="stable")[:max_det]
    return [(rank, int(boxes.cls[k]), names[int(boxes.cls[k])], float(boxes.conf[k]),
             *boxes.xyxy[k].tolist()) for rank, k in enumerate(order)]


def predict(model, bench, *, imgsz: int, max_det: int = 10, conf: float = 0.05,
            batch: int = 64) -> tuple[pd.DataFrame, float]:
    """Detections of every scene, ranked by confidence (at most `max_det` per image), and the
    mean detection time per image in milliseconds. Labels are the benchmark's object names, or
    the detector's own class names where the benchmark has no object table (`paper`: COCO)."""
    names = (bench.objects["name"].tolist() if len(bench.objects)
             else [model.names[i] for i in range(len(model.names))])
    rows = []
    paths = bench.scenes["image_path"].tolist()
    ids = bench.scenes["scene_id"].tolist()
    start = time.perf_counter()
    for s in range(0, len(paths), batch):
        results = model.predict(paths[s:s + batch], imgsz=imgsz, conf=conf, max_det=max_det,
                                device="cpu", verbose=False)
        for sid, res in zip(ids[s:s + batch], results, strict=True):
            rows += [(sid, *row) for row in result_rows(res, names, max_det)]
    per_image = (time.perf_counter() - start) / max(len(paths), 1) * 1e3
    return pd.DataFrame(rows, columns=DET_COLUMNS), per_image


def oracle_detections(bench, max_det: int = 10) -> pd.DataFrame:
    """The scenes' exact boxes as detections (score 1), largest box first."""
    names = bench.objects["name"].tolist()
    rows = []
    for row in bench.scenes.itertuples():
        boxes = [list(b) for b in row.boxes]
        order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) *
                       (boxes[i][3] - boxes[i][1]))[:max_det]
        for rank, i in enumerate(order):
            o = int(row.objs[i])
            rows.append((row.scene_id, rank, o, names[o], 1.0, *map(float, boxes[i])))
    return pd.DataFrame(rows, columns=DET_COLUMNS)


def caption(labels: list[str]) -> str:
    """"a picture of a motorcycle and a palm tree" from labels in confidence order."""
    uniq = list(dict.fromkeys(labels))
    if not uniq:
        return "a picture"
    art = [("an " if x[0].lower() in "aeiou" else "a ") + x for x in uniq]
    body = art[0] if len(art) == 1 else ", ".join(art[:-1]) + " and " + art[-1]
    return f"a picture of {body}"


def labels_by_scene(dets: pd.DataFrame, min_score: float = 0.0) -> dict[int, list[str]]:
    """scene id -> its detected labels with a score >= `min_score` (the profile's
    `caption_conf`: the caption's objects) in confidence order (repeats kept)."""
    kept = dets[dets["score"] >= min_score] if min_score > 0 else dets
    by_scene = kept.sort_values(["scene_id", "rank"]).groupby("scene_id")["label"].apply(list)
    return {int(s): v for s, v in by_scene.items()}


def scene_captions(dets: pd.DataFrame, scene_ids, min_score: float = 0.0) -> dict[int, str]:
    """scene id -> the caption naming its detections with a score >= `min_score`."""
    by_scene = labels_by_scene(dets, min_score)
    return {int(s): caption(by_scene.get(int(s), [])) for s in scene_ids}


def evaluate(model, data_yaml: Path, *, imgsz: int, split: str = "test",
             out: Path | None = None) -> tuple[dict, pd.DataFrame]:
    """mAP50 and mAP50-95 on `split`, overall and per class (ultralytics' validator)."""
    metrics = model.val(data=str(data_yaml), split=split, imgsz=imgsz, device="cpu",
                        plots=False, verbose=False, project=str(out) if out else None,
                        name="val", exist_ok=True, batch=32)
    box = metrics.box
    per_class = pd.DataFrame({"obj": np.asarray(box.ap_class_index, dtype=int),
                              "map50": np.asarray(box.ap50), "map50_95": np.asarray(box.ap)})
    return {"map50": float(box.map50), "map50_95": float(box.map)}, per_class


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def gold_recall(bench, dets: pd.DataFrame, thresholds, split: str = "test",
                min_iou: float = 0.5) -> pd.DataFrame:
    """What each confidence threshold leaves the model of the objects `split`'s questions ask
    about: per threshold (each >= the one `dets` was predicted at), detections per scene, the
    share of questions whose object has a box (IoU >= `min_iou`) and whose caption names it.
    Filtering `dets` by score equals predicting at that threshold: a box is suppressed only by
    a higher-scored one, and `max_det` keeps the highest."""
    questions = bench.split(split)
    scenes = bench.scenes.set_index("scene_id")
    ids = set(questions["scene_id"])
    rows = []
    for t in thresholds:
        kept = dets[(dets["score"] >= t) & dets["scene_id"].isin(ids)]
        boxes = {s: g[["x0", "y0", "x1", "y1"]].to_numpy() for s, g in kept.groupby("scene_id")}
        labels = labels_by_scene(kept)
        found, named = [], []
        for q in questions.itertuples():
            sc = scenes.loc[q.scene_id]
            true = sc.boxes[list(sc.objs).index(q.target_obj)]
            found.append(any(iou(b, true) >= min_iou for b in boxes.get(q.scene_id, [])))
            named.append(q.target_name in labels.get(int(q.scene_id), []))
        rows.append({"threshold": float(t), "boxes_per_scene": len(kept) / max(len(ids), 1),
                     "objects_per_scene": float(scenes.loc[sorted(ids), "objs"].map(len).mean()),
                     "object_detected": float(np.mean(found)),
                     "caption_names_object": float(np.mean(named))})
    return pd.DataFrame(rows)


def trained_detector(cfg, bench, force: bool = False, train_if_missing: bool = True
                     ) -> tuple[Path, pd.DataFrame, float]:
    """Train (or load from cache) the profile's YOLO: weights, per-epoch log, training seconds.

    Cached under ``artifacts/<profile>/02_detection/yolo/``; the `paper` profile uses
    ``cfg.yolo_weights`` instead (returned with an empty log). Without `train_if_missing`, a
    missing cache raises FileNotFoundError naming notebook 02."""
    from . import artifacts
    from .paths import artifacts_dir

    if cfg.yolo_weights:
        return Path(load_yolo(cfg.yolo_weights).ckpt_path), pd.DataFrame(), 0.0
    from importlib.metadata import version

    cache = artifacts.stage_cache(
        artifacts_dir(cfg.profile, "02_detection"), "yolo",
        key_parts=(bench.meta["content_hash"], cfg.det_epochs, cfg.det_imgsz, cfg.seed,
                   TRAIN_RECIPE, version("ultralytics")), force=force, sources=())
    if not cache.valid and not train_if_missing:
        raise FileNotFoundError(f"no trained YOLO for these settings in {cache.path}: run "
                                "notebook 02_detection first")
    if not cache.valid:
        with cache.writing() as tmp:
            data_yaml = export_dataset(bench, tmp / "dataset")
            start = time.perf_counter()
            weights, log = train_yolo(data_yaml, tmp / "runs", epochs=cfg.det_epochs,
                                      imgsz=cfg.det_imgsz, seed=cfg.seed)
            seconds = time.perf_counter() - start
            (tmp / "best.pt").write_bytes(Path(weights).read_bytes())
            log.to_csv(tmp / "train_log.csv", index=False)
            artifacts.write_json(tmp / "train.json", {"seconds": seconds})
    info = json.loads((cache.path / "train.json").read_text())
    # the exported dataset's data.yaml points at the temp folder name: rewrite for the final one
    data_yaml = cache.path / "dataset" / "data.yaml"
    spec = yaml.safe_load(data_yaml.read_text())
    if spec["path"] != str(cache.path / "dataset"):
        spec["path"] = str(cache.path / "dataset")
        data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return cache.path / "best.pt", pd.read_csv(cache.path / "train_log.csv"), info["seconds"]


def detector_weights(cfg, bench) -> Path:
    """The weights file of the profile's trained YOLO (never trains; see `trained_detector`)."""
    return trained_detector(cfg, bench, train_if_missing=False)[0]


# Default-profile floor of the notebook check (results/default/02_map.csv):
# a from-scratch YOLOv8n within the 15-minute CPU budget on 478 glyph classes.
DEFAULT_MAP50_FLOOR = 0.7  # test scenes, 128 px: 0.735 after 10 epochs (9.9 min), 0.816 after 12


def save_detections(stage_dir: Path, predicted: pd.DataFrame, used: pd.DataFrame,
                    captions: dict[int, str]) -> dict[str, Path]:
    """Atomically write the detections downstream notebooks read (Parquet)."""
    from .artifacts import atomic_path

    out = {}
    caps = pd.DataFrame({"scene_id": list(captions), "caption": list(captions.values())})
    for name, df in (("predicted", predicted), ("detections", used), ("captions", caps)):
        path = Path(stage_dir) / f"{name}.parquet"
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
        out[name] = path
    return out


def load_detections(profile: str) -> tuple[pd.DataFrame, dict[int, str]]:
    """Detections (ranked) and captions written by notebook 02; a clear error if it has not run."""
    from .paths import artifacts_dir

    stage = artifacts_dir(profile, "02_detection")
    try:
        dets = pd.read_parquet(stage / "detections.parquet")
        caps = pd.read_parquet(stage / "captions.parquet")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no detections for profile {profile!r} in {stage}: run notebook "
                                "02_detection first") from err
    return dets, dict(zip(caps["scene_id"].tolist(), caps["caption"].tolist(), strict=True))


def input_text(question: str, caption: str) -> str:
    """The text GeMKR and the text baselines read for one question: the question, a space and
    the detector's caption (the paper's model input). The one place it is built: the notebooks
    (`with_captions`), the retriever, the decoding explorer and the baselines all call it."""
    return f"{question} {caption}"


def with_captions(questions: pd.DataFrame, captions: dict[int, str]) -> pd.DataFrame:
    """The questions with their scene's caption filled in, and ``text`` = `input_text`: the
    model input of the paper. A caption the dataset already carries (paper profile) is kept."""
    filled = questions["caption"].where(questions["caption"] != "",
                                        questions["scene_id"].map(captions).fillna(""))
    text = [input_text(q, c) for q, c in zip(questions["question"], filled, strict=True)]
    return questions.assign(caption=filled, text=pd.Series(text, index=questions.index,
                                                           dtype=object))


def prediction_grid(bench, dets: pd.DataFrame, scene_ids: list[int], ncols: int = 4):
    """Predicted boxes (orange, with label and score) against ground truth (white)."""
    from matplotlib.patches import Rectangle

    from .plots import image_grid

    fig, axes = image_grid(len(scene_ids), ncols, (3.0, 3.1))
    scenes = bench.scenes.set_index("scene_id")
    for ax, sid in zip(axes, scene_ids, strict=True):
        ax.imshow(bench.image(sid))
        for x0, y0, x1, y1 in scenes.at[sid, "boxes"]:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, color="w"))
        for d in dets[dets["scene_id"] == sid].itertuples():
            ax.add_patch(Rectangle((d.x0, d.y0), d.x1 - d.x0, d.y1 - d.y0, fill=False, lw=1,
                                   color="tab:orange", ls="--"))
            ax.text(d.x0, d.y1, f"{d.rank + 1}. {d.label} {d.score:.2f}", fontsize=5,
                    va="top", bbox={"facecolor": "tab:orange", "alpha": 0.7, "pad": 0.3,
                                    "lw": 0})
        ax.set_title(", ".join(scenes.at[sid, "labels"]), fontsize=7)
    fig.tight_layout()
    return fig
