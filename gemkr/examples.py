"""GeMKR training / evaluation examples: per-scene model inputs and per-question clue targets.

A scene gives the image tensor and the frozen encoder's CLS features of its detected objects (at
most `max_objects`, in the detector's confidence order, with a mask for empty slots; trap T3). A
question gives its text (question + caption, paper-notes §7) and its clue target: the shortest
unique span from the start of the gold passage, as token ids stored in the index (DESIGN §5, T6).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .clues import target_clue
from .detect import iou, with_captions
from .index import CorpusIndex
from .model import Batch
from .pretrain import crop, to_tensor
from .vision import encode_crops, tower_width

# An object's box features (one row per object, `box_geometry`): where it is and how it ranks
# among the picture's objects, which is what "the animal on the left" or "the biggest object"
# asks. The LLM reads them through `VisualTokens.geo` (visual_layout "objects", box_features).
GEOMETRY = ("center_x", "center_y", "width", "height", "area", "leftmost", "rightmost",
            "topmost", "bottommost", "biggest", "smallest")


def box_geometry(boxes, size: tuple[float, float]) -> np.ndarray:
    """(n, len(GEOMETRY)) features of n boxes (x0, y0, x1, y1) in a picture of `size` (width,
    height) pixels: centre, size and area as fractions of the picture, then 1.0 where the object
    is the extreme one among the n (ties: every tied object), else 0.0."""
    w_img, h_img = size
    b = np.asarray(boxes, dtype=float).reshape(-1, 4) / np.array([w_img, h_img, w_img, h_img])
    if len(b) == 0:
        return np.zeros((0, len(GEOMETRY)))
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    area = w * h
    flags = [cx == cx.min(), cx == cx.max(), cy == cy.min(), cy == cy.max(),
             area == area.max(), area == area.min()]
    return np.stack([cx, cy, w, h, area, *(f.astype(float) for f in flags)], axis=1)


def scene_rows(bench) -> dict[int, int]:
    """scene id -> its row in ``bench.scenes`` (the row of its tensors in `scene_inputs`)."""
    return {int(s): i for i, s in enumerate(bench.scenes["scene_id"].tolist())}


def crops_of(img, boxes, size: int, max_objects: int) -> list[torch.Tensor]:
    """The crops the encoder sees of one picture: its first `max_objects` boxes (x0, y0, x1, y1,
    detector confidence order), each resized to `size`."""
    return [crop(img, box, size) for box in np.asarray(boxes, dtype=float)[:max_objects]]


def geometry_of(boxes, size: tuple[float, float], max_objects: int) -> torch.Tensor:
    """(max_objects, len(GEOMETRY)) box features of a picture's first `max_objects` boxes,
    zero rows in empty slots."""
    out = torch.zeros(max_objects, len(GEOMETRY))
    g = box_geometry(np.asarray(boxes, dtype=float)[:max_objects], size)
    out[:len(g)] = torch.as_tensor(g, dtype=torch.float32)
    return out


@torch.no_grad()
def picture_inputs(visual, pictures, n: int, size: int, max_objects: int,
                   crops_per_batch: int = 1024) -> dict[str, torch.Tensor]:
    """The one path from pictures to the model's visual inputs, for the benchmark's scenes
    (`scene_inputs`) and for a single picture at query time (`Retriever.scene`): `pictures`
    yields `n` pairs (PIL image, its detected boxes x0,y0,x1,y1 in rank order, or None). Returns
    images (n,3,size,size), object features (n,max_objects,width), mask (n,max_objects) and box
    features (n,max_objects,G). Crops of many pictures are encoded together (a scene has only a
    few objects; one ViT call per scene wasted most of the time)."""
    images = torch.empty(n, 3, size, size)
    feats = torch.zeros(n, max_objects, tower_width(visual))
    mask = torch.zeros(n, max_objects, dtype=torch.bool)
    geometry = torch.zeros(n, max_objects, len(GEOMETRY))
    crops, slots = [], []

    def flush():
        if crops:
            where = torch.tensor(slots)
            feats[where[:, 0], where[:, 1]] = encode_crops(visual, torch.stack(crops))
            mask[where[:, 0], where[:, 1]] = True
            crops.clear()
            slots.clear()

    for i, (img, boxes) in enumerate(pictures):
        images[i] = to_tensor(img, size)
        if boxes is not None and len(boxes):
            geometry[i] = geometry_of(boxes, img.size, max_objects)
            for j, c in enumerate(crops_of(img, boxes, size, max_objects)):
                crops.append(c)
                slots.append((i, j))
        if len(crops) >= crops_per_batch:
            flush()
    flush()
    return {"images": images, "objects": feats, "mask": mask, "geometry": geometry}


def scene_inputs(bench, dets: pd.DataFrame, visual, size: int, max_objects: int,
                 crops_per_batch: int = 1024) -> dict[str, torch.Tensor]:
    """`picture_inputs` of every benchmark scene and its detections, row-aligned with
    ``bench.scenes`` (``row``: scene id -> row)."""
    by_scene = {sid: g.sort_values("rank") for sid, g in dets.groupby("scene_id")}

    def pictures():
        for sid in bench.scenes["scene_id"].tolist():
            g = by_scene.get(sid)
            yield bench.image(sid), None if g is None else g[["x0", "y0", "x1", "y1"]].to_numpy()

    return {**picture_inputs(visual, pictures(), len(bench.scenes), size, max_objects,
                             crops_per_batch), "row": scene_rows(bench)}


def clue_targets(questions: pd.DataFrame, index: CorpusIndex, max_tokens: int,
                 min_tokens: int) -> tuple[list[list[int]], pd.DataFrame]:
    """The clue target of each question (token ids) and a table of how unique they are."""
    cache: dict[int, tuple] = {}
    for pid in questions["gold_pid"].unique().tolist():
        t = target_clue(index, index.passage_tokens(index.number_of(pid)), max_tokens,
                        min_tokens)
        cache[pid] = (list(t.tokens), t.unique, t.n_docs)
    rows = [cache[p] for p in questions["gold_pid"].tolist()]
    info = pd.DataFrame({"qid": questions["qid"].to_numpy(), "clue_tokens": [len(r[0]) for r in
                                                                               rows],
                         "unique": [r[1] for r in rows], "passages": [r[2] for r in rows]})
    return [r[0] for r in rows], info


def model_questions(questions: pd.DataFrame, captions: dict[int, str],
                    use_caption: bool = True,
                    labels: dict[int, list[str]] | None = None) -> pd.DataFrame:
    """Questions with the model's input ``text``: question + detector caption (paper-notes §7),
    or the question alone (``use_caption=False``). With `labels` (scene id -> the caption's
    object names, `probe.scene_labels`), a ``caption_names`` column: the names the text's
    caption says (none without a caption, or where the dataset brought its own caption)."""
    detector = questions["caption"] == ""  # the caption `with_captions` fills from the detector
    q = with_captions(questions, captions)
    if labels is not None:
        q = q.assign(caption_names=[list(labels.get(int(s), [])) if use_caption and d else []
                                    for s, d in zip(q["scene_id"], detector, strict=True)])
    return q if use_caption else q.assign(text=q["question"])


def make_batch(questions: pd.DataFrame, inputs: dict, targets: list[list[int]] | None = None,
               text_column: str = "text", texts: list[str] | None = None) -> Batch:
    """A model Batch for these question rows (targets aligned with the rows, or None); `texts`
    replaces the rows' `text_column`."""
    rows = [inputs["row"][int(s)] for s in questions["scene_id"].tolist()]
    idx = torch.as_tensor(rows, dtype=torch.long)
    geometry = inputs.get("geometry")
    texts = questions[text_column].tolist() if texts is None else texts
    # a text that is the question alone has no detector caption (use_caption=False, dropout)
    captioned = ([t != q for t, q in zip(texts, questions["question"], strict=True)]
                 if "question" in questions else None)
    names = None
    if "caption_names" in questions:  # a text that lost its caption holds none of its names
        names = [list(n) if c else []
                 for n, c in zip(questions["caption_names"], captioned or [True] * len(texts),
                                 strict=True)]
    return Batch(images=inputs["images"][idx], objects=inputs["objects"][idx],
                 mask=inputs["mask"][idx], texts=texts, targets=targets,
                 geometry=None if geometry is None else geometry[idx], captioned=captioned,
                 names=names)


def batches(questions: pd.DataFrame, inputs: dict, targets: list[list[int]], batch_size: int,
            rng: np.random.Generator, caption_dropout: float = 0.0):
    """Shuffled training batches of one epoch (the caller seeds `rng` per epoch). With
    `caption_dropout` > 0 that share of the examples reads the question alone (no caption):
    there the visual tokens are the only way to know which object is which."""
    order = rng.permutation(len(questions))
    drop = rng.random(len(questions)) < caption_dropout if caption_dropout > 0 else None
    for s in range(0, len(order), batch_size):
        take = order[s:s + batch_size]
        rows = questions.iloc[take]
        texts = None
        if drop is not None:
            texts = [q if d else t for q, t, d in zip(rows["question"], rows["text"], drop[take],
                                                      strict=True)]
        yield make_batch(rows, inputs, [targets[i] for i in take], texts=texts)


def alignment_objects(bench, dets: pd.DataFrame, inputs: dict, pid_of_obj: dict[int, int],
                      split: str = "train", min_iou: float = 0.5) -> pd.DataFrame:
    """The alignment stage's examples: every detected object slot of the `split` scenes whose
    box matches a true object (IoU >= `min_iou`) that has a passage in `pid_of_obj` (the
    objects some training question asks about: test_unseen's objects never appear), as rows
    (scene_id, row, slot, obj, pid)."""
    rows = []
    slots = inputs["mask"].shape[1]
    by_scene = {sid: g.sort_values("rank") for sid, g in dets.groupby("scene_id")}
    for sc in bench.scenes[bench.scenes["split"] == split].itertuples():
        g = by_scene.get(sc.scene_id)
        if g is None:
            continue
        for slot, box in enumerate(g[["x0", "y0", "x1", "y1"]].to_numpy()[:slots]):
            overlaps = [iou(box, true) for true in sc.boxes]
            best = int(np.argmax(overlaps)) if overlaps else -1
            if best >= 0 and overlaps[best] >= min_iou and int(sc.objs[best]) in pid_of_obj:
                obj = int(sc.objs[best])
                rows.append((int(sc.scene_id), inputs["row"][int(sc.scene_id)], slot, obj,
                             pid_of_obj[obj]))
    return pd.DataFrame(rows, columns=["scene_id", "row", "slot", "obj", "pid"])


def alignment_batches(examples: pd.DataFrame, inputs: dict, targets: list[list[int]],
                      batch_size: int, rng: np.random.Generator):
    """Shuffled batches of one alignment epoch: per item one object's feature (B,W), its box
    features (B,G) and its clue target."""
    order = rng.permutation(len(examples))
    rows = torch.tensor(examples["row"].to_numpy(dtype=np.int64))
    slots = torch.tensor(examples["slot"].to_numpy(dtype=np.int64))
    geometry = inputs.get("geometry")
    for s in range(0, len(order), batch_size):
        take = torch.as_tensor(order[s:s + batch_size], dtype=torch.long)
        r, k = rows[take], slots[take]
        yield Batch(images=None, objects=inputs["objects"][r, k],  # the scene image is not read
                    mask=inputs["mask"][r, k], texts=[""] * len(take),
                    targets=[targets[int(i)] for i in take],
                    geometry=None if geometry is None else geometry[r, k])
