"""Stage 1 of notebook 04: contrastive pretraining of the kit's vision tower (no pretrained image
encoder is available offline, offline-assets §8).

The image tower learns to match (a) object crops with their object's KB passage
(``"lemma, lemma: gloss"``; contrasted against every object of the table, like a zero-shot
classifier) and (b) whole scenes with their object list (``"a picture of a bicycle and an owl"``;
contrasted within the batch, as CLIP does). The text tower is the packaged MiniLM, locked, so its
embeddings are computed once. Images use the BLIP eval transform: squash-resize, CLIP mean/std.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .detect import caption

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """(3,size,size) float tensor: squash resize (bicubic), CLIP normalisation."""
    arr = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC),
                     dtype=np.float32) / 255.0
    arr = (arr - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def crop(img: Image.Image, box, size: int) -> torch.Tensor:
    """A box of the image (clipped to it) as a model input."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    w, h = img.size
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))
    x1, y1 = max(x0 + 1, min(x1, w)), max(y0 + 1, min(y1, h))
    return to_tensor(img.crop((x0, y0, x1, y1)), size)


def pair_tensors(bench, split: str, size: int) -> dict[str, torch.Tensor]:
    """Crops (with object rows) and scenes (with caption texts) of a split, as tensors."""
    crops, objs, owner, scenes, texts = [], [], [], [], []
    for row in bench.scenes[bench.scenes["split"] == split].itertuples():
        img = bench.image(row.scene_id)
        scenes.append(to_tensor(img, size))
        texts.append(caption(list(row.labels)))
        for o, box in zip(row.objs, row.boxes, strict=True):
            crops.append(crop(img, box, size))
            objs.append(int(o))
            owner.append(len(scenes) - 1)
    return {"crops": torch.stack(crops), "objs": torch.tensor(objs),
            "crop_scene": torch.tensor(owner), "scenes": torch.stack(scenes),
            "scene_texts": texts}


def object_passages(bench) -> list[str]:
    """The KB passage of every object of the table, in table order (row i = object id i); the
    same text as the objects' KB-S passages (``"lemma, lemma: gloss"``)."""
    from .data import wordnet

    nouns = wordnet.load_nouns()
    return [wordnet.passage_text(nouns[int(s)]) for s in bench.objects["synset"].tolist()]


def vision_batches(data: dict, object_text: torch.Tensor, scene_text: torch.Tensor,
                   batch_scenes: int, rng):
    """Shuffled batches of `batch_scenes` scenes with all their crops: the arguments of
    `contrastive_loss` after the model."""
    order = torch.from_numpy(rng.permutation(len(data["scenes"])))
    for s in range(0, len(order), batch_scenes):
        take = order[s:s + batch_scenes]
        in_batch = torch.isin(data["crop_scene"], take)
        yield (data["crops"][in_batch], data["objs"][in_batch], object_text,
               data["scenes"][take], scene_text[take])


@torch.no_grad()
def text_features(model, tokenizer, texts: list[str], batch: int = 256) -> torch.Tensor:
    """L2-normalised embeddings of the locked text tower."""
    out = [model.encode_text(tokenizer(texts[s:s + batch]), normalize=True)
           for s in range(0, len(texts), batch)]
    return torch.cat(out)


def contrastive_loss(model, crops, objs, object_text, scenes, scene_text) -> torch.Tensor:
    """Crops vs every object's passage (cross-entropy) + scenes vs in-batch object lists (CLIP)."""
    scale = model.logit_scale.exp().clamp(max=100)
    img = model.encode_image(crops, normalize=True)
    loss = torch.nn.functional.cross_entropy(scale * img @ object_text.T, objs)
    if len(scenes) > 1:
        s = model.encode_image(scenes, normalize=True)
        logits = scale * s @ scene_text.T
        target = torch.arange(len(scenes))
        loss = loss + 0.5 * (torch.nn.functional.cross_entropy(logits, target) +
                             torch.nn.functional.cross_entropy(logits.T, target))
    return loss


@torch.no_grad()
def zero_shot_accuracy(model, crops: torch.Tensor, objs: torch.Tensor,
                       object_text: torch.Tensor, batch: int = 512) -> float:
    """Share of crops whose nearest object passage is their own object (naming accuracy)."""
    hits = 0
    for s in range(0, len(crops), batch):
        img = model.encode_image(crops[s:s + batch], normalize=True)
        hits += int(((img @ object_text.T).argmax(-1) == objs[s:s + batch]).sum())
    return hits / max(len(crops), 1)
