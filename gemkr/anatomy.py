"""Notebook 04's look inside a GeMKR model: one forward pass with the shape of every tensor, one
training sequence position by position with its label mask, and the architecture drawn from the
live model (every box carries the shape measured in that forward pass).

Nothing here trains or changes the model; it calls the model's own methods (`GeMKR.visual`,
`GeMKR.inputs`, the encoder and the LLM) and reads what they return, so what the notebook shows
is what the model runs. `training_sequence` also checks itself: each position it labels as a
prompt or clue token must hold exactly that token's input embedding in the model's sequence,
and each visual position exactly one visual token; a layout that drifts from the model fails
there instead of showing a wrong picture.
"""

from __future__ import annotations

import pandas as pd
import torch

from .model import CAPTION_JOINT, CAPTION_OPENING, IGNORE, PROMPT, Batch, GeMKR, template_ids


def _shape(t) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


@torch.no_grad()
def forward_shapes(model: GeMKR, batch: Batch) -> pd.DataFrame:
    """One forward pass of `batch` (with targets), step by step: tensor, shape, what it is and
    the code that makes it."""
    enc = model.encoder
    objects, mask = batch.objects, batch.mask
    r, keep = enc.pad_objects(objects, mask)
    patches = enc.trunk.embed(batch.images)
    cls, prefix = enc(batch.images, objects, mask)
    visual = model.visual(batch) if model.use_image else None
    embeds, amask, labels = model.inputs(batch, visual=visual)  # the tokens computed above
    keep_n = int((labels != IGNORE).sum(1).max()) + 1
    out = model.llm(inputs_embeds=embeds, attention_mask=amask,
                    position_ids=(amask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=keep_n)
    loss = model(batch)
    rows = [
        ("scene images", batch.images, "the scene, resized for the ViT", "examples.make_batch"),
        ("object features R", objects, "frozen ViT's raw CLS of each detected crop, "
         "confidence order", "vision.encode_crops"),
        ("object mask", mask, "True where a slot holds a detected box", "trained.scene_inputs"),
        ("patch tokens", patches, "CLS + patch embeddings entering the ViT blocks",
         "OpenClipTrunk.embed"),
        ("prefix rows P_l = E_l + R", prefix if prefix is not None else r,
         f"keys/values of the last {enc.n_prefix} blocks (learned E_l + objects R)",
         "PrefixViT.forward"),
        ("scene CLS", cls, "the prefixed ViT's output CLS", "PrefixViT.forward"),
    ]
    if batch.geometry is not None:
        rows.insert(3, ("box features", batch.geometry, "where each box is (examples.box_"
                        "geometry)", "examples.box_geometry"))
    if visual is not None:
        rows.append(("visual tokens", visual, "[CLS, each object slot's tokens] in the LLM's "
                     "input space", "VisualTokens.forward"))
    rows += [
        ("inputs_embeds", embeds, "prompt + visual tokens + clue + EOS, left-padded",
         "GeMKR.inputs"),
        ("attention mask", amask, "1 on real positions, 0 on padding", "GeMKR.inputs"),
        ("labels", labels, f"clue + EOS ids, {IGNORE} elsewhere (no loss there)",
         "GeMKR.inputs"),
        ("logits (last positions)", out.logits, "next-token scores where a clue token or EOS "
         "is predicted", "GeMKR.forward"),
        ("loss", loss, "mean cross-entropy over clue + EOS", "GeMKR.forward"),
    ]
    return pd.DataFrame([{"tensor": n, "shape": _shape(t), "what": w, "code": c}
                         for n, t, w, c in rows])


def _segments(model: GeMKR, batch: Batch, i: int, visual) -> list[tuple[str, list]]:
    """The sequence of item `i` as (kind, ids or visual-token numbers), in the model's order."""
    tok, bos = model.tokenizer, model.sp.bos
    after = template_ids(tok, bos)[1]
    target = [] if batch.targets is None else [*batch.targets[i], model.sp.eos]
    if model._inline(batch, visual, i):
        head, tail = PROMPT.split("<ImageHere>")[0].split("{input}")
        joint = CAPTION_JOINT if batch.captioned[i] else CAPTION_OPENING
        first = [bos, *tok(head + batch.texts[i] + joint, add_special_tokens=False)["input_ids"]]
        keep = model.object_mask(batch, visual)
        slots = [k for k in range(visual.shape[1] - 1) if bool(keep[i, k])]
        segs = [("prompt", first), ("object token", [k + 1 for k in slots]),
                ("prompt", tok(tail, add_special_tokens=False)["input_ids"]),
                ("CLS token", [0])]
    else:
        text = batch.texts[i] if model.use_text else ""
        segs = [("prompt", template_ids(tok, bos, text)[0])]
        if visual is not None and model._spelled(visual):
            keep = model.object_mask(batch, visual)
            segs.append(("visual token", [0, *[k + 1 for k in range(visual.shape[1] - 1)
                                                if bool(keep[i, k])]]))
        elif visual is not None:
            segs.append(("visual token", list(range(visual.shape[1]))))
    return [*segs, ("prompt", after), ("clue", target)]


@torch.no_grad()
def training_sequence(model: GeMKR, batch: Batch, i: int = 0) -> pd.DataFrame:
    """Item `i` of a batch with targets, one row per position of the sequence the LLM reads:
    kind (prompt / visual / clue), the token's text (or which visual token), and its label
    (the id the loss asks for, or "masked"). Checked against `GeMKR.inputs` (module doc)."""
    if batch.targets is None:
        raise ValueError("training_sequence needs a batch with targets (make_batch(..., targets))")
    visual = model.visual(batch) if model.use_image else None
    embeds, amask, labels = model.inputs(batch, visual=visual)
    length = int(amask[i].sum())
    seq, lab = embeds[i, -length:], labels[i, -length:]
    emb = model.llm.get_input_embeddings()
    rows, pos = [], 0
    for kind, items in _segments(model, batch, i, visual):
        for item in items:
            if kind in ("prompt", "clue"):
                expect, text = emb(torch.tensor(item, device=seq.device)), model.tokenizer.decode(
                    [item])
            else:
                expect, text = visual[i, item], f"<visual {item}>"
            if not torch.equal(seq[pos].to(expect.dtype), expect):
                raise AssertionError(f"position {pos} ({kind} {text!r}) differs from the "
                                     "model's sequence: anatomy's layout drifted from GeMKR.inputs")
            label = int(lab[pos])
            rows.append({"position": pos, "kind": kind, "token": text,
                         "label": "masked" if label == IGNORE else
                         model.tokenizer.decode([label])})
            pos += 1
    if pos != length:
        raise AssertionError(f"{pos} positions laid out, the model's sequence has {length}")
    # labels are shifted by the LLM: position p's label is what position p-1 predicts; shown
    # unshifted, as GeMKR.inputs stores them
    return pd.DataFrame(rows)


def shape_of(shapes: pd.DataFrame, tensor: str) -> str:
    """The shape string of one row of `forward_shapes` ('' when absent)."""
    hit = shapes.loc[shapes["tensor"] == tensor, "shape"]
    return hit.iloc[0] if len(hit) else ""


def _token_kinds(model: GeMKR) -> str:
    """How this model makes its visual tokens, for the figure."""
    vt = model.visual_tokens
    if vt.layout == "paper":
        return "CLS + 2 prefix rows:\nLN + Linear"
    objects = "name lookup" if vt.names is not None else "LN + Linear"
    return f"CLS: LN + Linear;\nobjects: {objects}" + (" + box" if vt.geo is not None else "")


def architecture_figure(cfg, model: GeMKR, shapes: pd.DataFrame):
    """The model as boxes and arrows, each box labelled from the live config and the measured
    shapes of `forward_shapes` (detector -> crops -> ViT -> visual tokens -> LLM + LoRA ->
    constrained decoder -> passages)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    enc, llm_conf = model.encoder, model.llm.config
    lora = cfg.lora_r if cfg.use_lora else None
    boxes = {  # name: (x, y, text, colour)
        "image": (0.0, 2.0, f"scene image\n{shape_of(shapes, 'scene images')}", "#e0e0e0"),
        "yolo": (0.0, 0.4, f"YOLO detector\nboxes >= det_conf {cfg.det_conf}\ncaption: boxes "
                 f">= {cfg.caption_conf}", "#f6d5a8"),
        "crops": (2.3, 0.4, f"crops -> frozen ViT\nobject features R\n"
                  f"{shape_of(shapes, 'object features R')}", "#cfe3f6"),
        "vit": (2.3, 2.0, f"frozen ViT, {len(enc.trunk.blocks)} blocks\nprefix P_l = E_l + R in "
                f"last {enc.n_prefix}\ndual-flow gates g_l,h\nCLS "
                f"{shape_of(shapes, 'scene CLS')}", "#cfe3f6"),
        "tokens": (4.7, 1.2, f"visual tokens\n{_token_kinds(model)}\n"
                   f"{shape_of(shapes, 'visual tokens')}", "#d7efd2"),
        "prompt": (4.7, 3.0, "prompt template\nquestion + caption\n(visual tokens spliced in)",
                   "#e0e0e0"),
        "llm": (7.1, 2.0, f"LLM (frozen)\n{llm_conf.num_hidden_layers} blocks, width "
                f"{llm_conf.hidden_size}\n{f'LoRA r={lora} on q, v' if lora else 'no LoRA'}\n"
                f"inputs {shape_of(shapes, 'inputs_embeds')}", "#f3d3e6"),
        "decoder": (7.1, 0.4, f"constrained beam search\nFM-index of the KB\n<= "
                    f"{cfg.clue_max_tokens} clue tokens", "#f6d5a8"),
        "passages": (9.3, 0.4, "passages that\ncontain the clues\n= the retrieval", "#e0e0e0"),
    }
    arrows = [("image", "yolo"), ("yolo", "crops"), ("image", "vit"), ("crops", "vit"),
              ("vit", "tokens"), ("crops", "tokens"), ("tokens", "llm"), ("prompt", "llm"),
              ("llm", "decoder"), ("decoder", "passages")]
    w, h = 1.9, 1.05
    fig, ax = plt.subplots(figsize=(12, 4.6))
    for x, y, text, colour in boxes.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=colour,
                                    ec="#555555"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=7.5)
    for a, b in arrows:
        (xa, ya, *_), (xb, yb, *_) = boxes[a], boxes[b]
        start, end = (xa + w / 2, ya + h / 2), (xb + w / 2, yb + h / 2)
        if xa != xb:  # leave from the side, enter from the side
            start, end = (xa + w, ya + h / 2), (xb, yb + h / 2)
        else:
            start, end = ((xa + w / 2, ya) if ya > yb else (xa + w / 2, ya + h),
                          (xb + w / 2, yb + h) if ya > yb else (xb + w / 2, yb))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12,
                                     color="#444444", lw=1.0))
    ax.set(xlim=(-0.2, 11.4), ylim=(0.2, 4.2))
    ax.axis("off")
    ax.set_title(f"GeMKR as configured ({cfg.profile}): frozen parts blue / pink, trained: the "
                 "prefix rows, gates, visual-token Linears and LoRA", fontsize=9)
    return fig
