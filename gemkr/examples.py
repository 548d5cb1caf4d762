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
from .detect import with_captions
from .index import CorpusIndex
from .model import Batch
from .pretrain import crop, to_tensor
from .vision import encode_crops, tower_width


def scene_rows(bench) -> dict[int, int]:
    """scene id -> its row in ``bench.scenes`` (the row of its tensors in `scene_inputs`)."""
    return {int(s): i for i, s in enumerate(bench.scenes["scene_id"].tolist())}


def crops_of(img, boxes, size: int, max_objects: int) -> list[torch.Tensor]:
    """The crops the encoder sees of one picture: its first `max_objects` boxes (x0, y0, x1, y1,
    detector confidence order), each resized to `size`."""
    return [crop(img, box, size) for box in np.asarray(boxes, dtype=float)[:max_objects]]


@torch.no_grad()
def object_inputs(visual, img, boxes, size: int, max_objects: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Object features (1,max_objects,width) and mask (1,max_objects) of one picture (a new
    picture at query time; `scene_inputs` does every scene of the benchmark in batches)."""
    objects = torch.zeros(1, max_objects, tower_width(visual))
    mask = torch.zeros(1, max_objects, dtype=torch.bool)
    crops = crops_of(img, boxes, size, max_objects)
    if crops:
        objects[0, :len(crops)] = encode_crops(visual, torch.stack(crops))
        mask[0, :len(crops)] = True
    return objects, mask


@torch.no_grad()
def scene_inputs(bench, dets: pd.DataFrame, visual, size: int, max_objects: int,
                 crops_per_batch: int = 1024) -> dict[str, torch.Tensor]:
    """Images (S,3,size,size), object features (S,max_objects,width) and mask (S,max_objects)
    for every scene, row-aligned with ``bench.scenes``. Crops of many scenes are encoded
    together (a scene has only a few objects; one ViT call per scene wasted most of the time)."""
    width = tower_width(visual)
    n = len(bench.scenes)
    images = torch.empty(n, 3, size, size)
    feats = torch.zeros(n, max_objects, width)
    mask = torch.zeros(n, max_objects, dtype=torch.bool)
    by_scene = {sid: g.sort_values("rank") for sid, g in dets.groupby("scene_id")}
    crops, slots = [], []

    def flush():
        if crops:
            where = torch.tensor(slots)
            feats[where[:, 0], where[:, 1]] = encode_crops(visual, torch.stack(crops))
            mask[where[:, 0], where[:, 1]] = True
            crops.clear()
            slots.clear()

    for i, sid in enumerate(bench.scenes["scene_id"].tolist()):
        img = bench.image(sid)
        images[i] = to_tensor(img, size)
        g = by_scene.get(sid)
        if g is not None:
            for j, c in enumerate(crops_of(img, g[["x0", "y0", "x1", "y1"]].to_numpy(), size,
                                           max_objects)):
                crops.append(c)
                slots.append((i, j))
        if len(crops) >= crops_per_batch:
            flush()
    flush()
    return {"images": images, "objects": feats, "mask": mask, "row": scene_rows(bench)}


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
                    use_caption: bool = True) -> pd.DataFrame:
    """Questions with the model's input ``text``: question + detector caption (paper-notes §7),
    or the question alone (``use_caption=False``)."""
    q = with_captions(questions, captions)
    return q if use_caption else q.assign(text=q["question"])


def make_batch(questions: pd.DataFrame, inputs: dict, targets: list[list[int]] | None = None,
               text_column: str = "text") -> Batch:
    """A model Batch for these question rows (targets aligned with the rows, or None)."""
    rows = [inputs["row"][int(s)] for s in questions["scene_id"].tolist()]
    idx = torch.as_tensor(rows, dtype=torch.long)
    return Batch(images=inputs["images"][idx], objects=inputs["objects"][idx],
                 mask=inputs["mask"][idx], texts=questions[text_column].tolist(),
                 targets=targets)


def batches(questions: pd.DataFrame, inputs: dict, targets: list[list[int]], batch_size: int,
            rng: np.random.Generator):
    """Shuffled training batches of one epoch (the caller seeds `rng` per epoch)."""
    order = rng.permutation(len(questions))
    for s in range(0, len(order), batch_size):
        take = order[s:s + batch_size]
        yield make_batch(questions.iloc[take], inputs, [targets[i] for i in take])
