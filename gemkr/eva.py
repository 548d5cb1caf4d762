"""EVA01-g-14 (the paper's image tower) from a local open_clip checkpoint, and its prefix adapter.

open_clip builds ``EVA01-g-14`` as a timm ``Eva`` trunk (40 blocks, width 1408, 16 heads, patch 14,
fused qkv with q and v biases and no k bias, absolute positions, no layer scale) plus a final norm
and a projection. GeMKR's tower is that trunk *without* its last block, the raw block-39 CLS being
the image feature and each crop's object feature (paper-notes §2-§3, trap T1), with the object-aware
prefix in the last 20 of its 39 blocks (`vision.PrefixViT`, which reaches the blocks through
`EvaTrunk`). Everything is frozen; nothing downloads: the weights are the user's file
(``eva_weights``, see `paper_files`).

Why the kit writes this adapter: timm's ``EvaBlock`` has no prefix hook, and the prefix must run
through each block's own frozen qkv weight and biases.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .paper_files import SOURCES

# the kit's names of open_clip image towers; any other value of `vision` is an open_clip model name
VISION_MODELS = {"eva01_g14": "EVA01-g-14"}


class VisionWeightsError(ValueError):
    """The EVA checkpoint is missing, unreadable, or of another model or shape (the message names
    the file expected and where it is published)."""


class EvaTrunk:
    """The pieces of a timm EVA trunk (inside open_clip's ``TimmModel``) the prefix needs; the
    same interface as `vision.OpenClipTrunk`. Only EVA01-style blocks are supported: fused qkv,
    absolute positions (no rotary embedding), no q/k norm, no attention gate."""

    def __init__(self, visual: nn.Module):
        trunk = getattr(visual, "trunk", None)
        if trunk is None or not hasattr(trunk, "blocks") or not hasattr(trunk, "_pos_embed"):
            raise TypeError(f"{type(visual).__name__} is neither the kit's ViT nor an open_clip "
                            "tower with a timm EVA trunk: the object-aware prefix cannot attach")
        attn = trunk.blocks[0].attn
        if (getattr(attn, "qkv", None) is None or getattr(attn, "gate", None) is not None
                or not isinstance(attn.q_norm, nn.Identity)
                or getattr(trunk, "rope", None) is not None):
            raise TypeError("only EVA01-style trunks are supported (fused qkv, absolute "
                            "positions, no rotary embedding, no q/k norm): EVA02 differs")
        self.visual, self.trunk = visual, trunk
        self.blocks = list(trunk.blocks)
        self.width = int(trunk.embed_dim)
        self.heads = int(attn.num_heads)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x, _ = self.trunk._pos_embed(self.trunk.patch_embed(images))  # rope is None (checked)
        return self.trunk.norm_pre(x)

    def run(self, blk, x):
        return blk(x)

    def qkv(self, blk):
        a = blk.attn
        bias = None if a.q_bias is None else torch.cat((a.q_bias, a.k_bias, a.v_bias))
        return a.qkv.weight, bias  # the prefix uses the same (q_bias, 0, v_bias) (trap T2)

    def norm1(self, blk, x):
        return blk.norm1(x)

    def finish(self, blk, x, out):
        a = blk.attn.proj(blk.attn.norm(out))
        x = x + blk.drop_path1(a if blk.gamma_1 is None else blk.gamma_1 * a)
        m = blk.mlp(blk.norm2(x))
        return x + blk.drop_path2(m if blk.gamma_2 is None else blk.gamma_2 * m)

    def encode(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x

    def pool(self, cls):
        """EVA-CLIP's embedding of a CLS: final norm, then the projection head. The tower GeMKR
        keeps ends at block 39, so in `paper` this approximates EVA-CLIP's own 40-block embedding
        (used only by the CLIP-crops baseline)."""
        t = self.trunk
        return self.visual.head(t.head(t.fc_norm(t.norm(cls))))


def model_name(vision: str) -> str:
    return VISION_MODELS.get(vision, vision)


def build_eva_clip(cfg, device: str | torch.device = "cpu"):
    """The open_clip model of `cfg.vision` with random weights (no file read): what
    `create_eva_clip` loads the checkpoint into; on ``device="meta"`` a shape-only model."""
    import open_clip

    name = model_name(cfg.vision)
    if name not in open_clip.list_models():
        raise VisionWeightsError(f"vision={cfg.vision!r} is neither 'tiny_vit' nor an open_clip "
                                 f"model ({', '.join(VISION_MODELS)} or an open_clip name)")
    from .vision import _quiet_loading  # open_clip notes that no pretrained weights were loaded

    with torch.device(device), _quiet_loading():
        model = open_clip.create_model(name, pretrained=None, device=device)
    EvaTrunk(model.visual)  # a tower the prefix supports, or a named error
    return model


def _open_clip_layout(model: nn.Module, state: dict) -> dict:
    """The renames open_clip's own loader applies to older checkpoints (text keys of custom-text
    models, a scalar logit scale, stale position ids), but none of its resizing: a checkpoint
    of another image size must be refused, not interpolated."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    state.pop("text.transformer.embeddings.position_ids", None)
    return state


def load_checkpoint(model: nn.Module, path: Path, vision: str) -> None:
    """Load an open_clip checkpoint into `model`, every tensor by name and shape."""
    from open_clip.factory import load_state_dict

    try:
        state = _open_clip_layout(model, load_state_dict(str(path), device="cpu",
                                                         weights_only=True))
    except Exception as err:  # a truncated, pickled-with-code or foreign file
        raise VisionWeightsError(f"cannot read {path} as an open_clip checkpoint "
                                 f"({type(err).__name__}: {err}); expected the {vision} "
                                 f"checkpoint from {SOURCES['eva']}") from err
    mine = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(mine[k].shape)})"
             for k, v in state.items() if k in mine and mine[k].shape != v.shape]
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    if wrong or missing or unexpected:
        raise VisionWeightsError(
            f"{path} is not a checkpoint of {model_name(vision)} as configured: "
            + "; ".join(f"{what}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                        for what, items in (("wrong shape", wrong), ("missing", missing),
                                            ("unexpected", unexpected)) if items)
            + f". Expected the checkpoint from {SOURCES['eva']}")
    model.load_state_dict(state, strict=True)


def create_eva_clip(cfg):
    """(open_clip model, text tokenizer) of `cfg.vision` with `cfg.eva_weights` loaded, frozen,
    its trunk cut to the first `cfg.vit_layers` blocks (EVA01-g-14: 39 of 40)."""
    import open_clip

    if not cfg.eva_weights or not Path(cfg.eva_weights).is_file():
        raise VisionWeightsError(
            f"{cfg.vision} weights {cfg.eva_weights or '(eva_weights not set)'} not found: the "
            f"open_clip checkpoint is published at {SOURCES['eva']}; put it at that path or "
            "point GEMKR_EVA_WEIGHTS at your copy")
    model = build_eva_clip(cfg)
    load_checkpoint(model, Path(cfg.eva_weights), cfg.vision)
    trunk = EvaTrunk(model.visual)
    n = len(trunk.blocks)
    size = tuple(model.visual.trunk.patch_embed.img_size)
    settings = {"vit_width": (cfg.vit_width, trunk.width), "vit_heads": (cfg.vit_heads,
                trunk.heads), "vit_image_size": ((cfg.vit_image_size,) * 2, size)}
    bad = [f"{k}={want} but the tower has {got}" for k, (want, got) in settings.items()
           if want != got]
    if not 1 <= cfg.vit_layers <= n:
        bad.append(f"vit_layers={cfg.vit_layers} but the tower has {n} blocks")
    if bad:
        raise VisionWeightsError(f"{cfg.vision}: {'; '.join(bad)}")
    model.visual.trunk.blocks = model.visual.trunk.blocks[:cfg.vit_layers]
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), open_clip.get_tokenizer(model_name(cfg.vision))
