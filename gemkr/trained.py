"""The three trained parts of GeMKR, each trained once and cached (notebook 04 trains them,
notebooks 05-08 load them).

1. ``vision_tower``: the kit's open_clip ViT, trained contrastively (`pretrain`).
2. ``knowledge_llm``: the LLM after stage 2 (`knowledge`): `default`'s cut SmolLM2 healed into a
   reader of its prompt, or the in-kit LLaMA trained from scratch; ``small``/``paper`` load
   their pretrained LLM as it is.
3. ``gemkr_model``: frozen ViT + object-aware prefix, visual-token projection, frozen LLM + LoRA,
   instruction-tuned on clue targets. Ablation variants are config switches and get their own
   cache entries (named by `variant`).

Each cache key holds the settings, seed, upstream keys and the hash of the gemkr sources the stage
runs, so editing a plot does not retrain and editing the model does. Training checkpoints live in
``_ckpt/`` beside the caches so an interrupted run resumes; the caches hold only the final
trainable tensors (safetensors) and a JSON of the run (loss history, wall time, measurements).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import artifacts, distributed, examples, knowledge, pretrain, train
from .config import recorded_reads
from .hardware import bf16_native
from .model import GeMKR, add_lora, build_llm, template_ids
from .paths import artifacts_dir
from .tokenizer import clue_text, name_ids
from .vision import PrefixViT, VisualTokens, create_clip

STAGE = "04_training"
VISION_FIELDS = ("vision", "eva_weights", "vit_width", "vit_layers", "vit_heads", "vit_patch",
                 "vit_image_size", "vision_epochs", "vision_batch", "vision_lr")
LLM_FIELDS = ("llm", "llm_blocks", "llm_last_blocks", "llm_hidden", "llm_layers", "llm_heads",
              "llm_pretrain_tokens", "llm_pretrain_passages", "llm_pretrain_context",
              "llm_pretrain_epochs", "llm_pretrain_batch", "llm_pretrain_lr")
GEMKR_FIELDS = ("prefix_len", "dual_flow", "object_features", "mask_empty_slots", "use_lora",
                "use_image", "use_text", "use_caption", "det_oracle_boxes", "max_objects",
                "visual_layout", "visual_objects", "box_features", "caption_dropout",
                "object_names", "name_sharpness", "name_tokens", "visual_caption",
                "lora_r", "lora_alpha", "lora_dropout", "epochs", "batch_size", "grad_accum",
                "lr", "min_lr", "warmup_steps", "weight_decay", "train_questions",
                "clue_max_tokens", "min_clue_tokens", "choice_loss")

# the alignment stage reads the object features and box features only (the detections, the clue
# targets and the LLM come in through its key's upstream parts and data hash)
ALIGN_FIELDS = ("visual_layout", "box_features", "object_features", "use_image", "object_names",
                "align_epochs", "align_lr", "align_batch")

# Settings every trained part's key covers: the profile names the cache folder, `_cache` adds the
# seed and whether training runs in bfloat16 here; decoding-only settings never change weights.
IN_EVERY_KEY = ("profile", "seed", "train_bf16")
DECODING_ONLY = ("decode_bf16",)
# Settings a loaded pipeline depends on through the content of what they select rather than a
# field list: the benchmark (its content hash is in every key), the tokenizer and knowledge bases
# (the index content and the clue targets are in the LLM's and tuning's keys), the detector and
# its thresholds (the detections' `table_key` is in the scene inputs', alignment's and tuning's
# keys; the captions are in the tuning questions' texts).
DATA_FIELDS = ("dataset", "data_root", "n_scenes", "n_unseen_scenes", "n_objects",
               "n_unseen_objects", "questions_per_scene", "max_glyphs", "image_size", "kb_s_size",
               "kb_names", "tokenizer", "yolo_weights", "det_epochs", "det_imgsz", "det_conf",
               "caption_conf")
# Settings of the constrained beam search: they change which clues are found, never a weight.
DECODING_FIELDS = ("num_beams", "num_beam_groups", "diversity_penalty", "length_penalty",
                   "stop_when_unique", "clue_first_token", *DECODING_ONLY)
# What loading a pipeline may read (`pipeline`), and what a single query may read on top of it
# (`Retriever.scene`, `Retriever.retrieve`): a setting outside these lists would change what a
# cached model is used with while its cache key stays the same.
PIPELINE_FIELDS = tuple(dict.fromkeys((*VISION_FIELDS, *LLM_FIELDS, *ALIGN_FIELDS,
                                       *GEMKR_FIELDS, *DATA_FIELDS, *DECODING_ONLY)))
QUERY_FIELDS = (*PIPELINE_FIELDS, *DECODING_FIELDS)


class NotTrainedError(RuntimeError):
    """A downstream notebook asked for a model notebook 04 has not trained yet."""


class CacheKeyError(RuntimeError):
    """A stage read a setting its cache key does not cover, or a cache hit was stored for other
    settings than the ones in use."""


_RECORDING: list[tuple[str, set, frozenset]] = []


def keyed_by(declared: tuple[str, ...], *, also: tuple[str, ...] = ()):
    """Run a cached stage while recording the `Config` fields it reads; `_save` refuses to
    store its result when it read one outside `declared` + `also` + `IN_EVERY_KEY` (the cache key
    is built from `declared`; `also` are settings whose effect the key holds another way, e.g.
    through a hash of the data they select), and a call that *loaded* its result (a cache hit)
    is held to the same rule when it returns. The declaration next to the code is thereby
    checked on every training and every load, in every profile (issues 17 and 26)."""
    allowed = frozenset((*declared, *also, *IN_EVERY_KEY))

    def wrap(fn):
        @functools.wraps(fn)
        def run(cfg, *args, **kwargs):
            with recorded_reads() as seen:
                _RECORDING.append((fn.__name__, seen, allowed))
                try:
                    out = fn(cfg, *args, **kwargs)
                finally:
                    _RECORDING.pop()
            _outside(fn.__name__, seen, allowed)
            return out
        return run
    return wrap


@contextlib.contextmanager
def limited_reads(name: str, allowed: tuple[str, ...]):
    """For the paths that use cached parts without being a stage (a single query): the block may
    read only the `Config` fields in `allowed` (+ `IN_EVERY_KEY`), else `CacheKeyError`."""
    with recorded_reads() as seen:
        yield
    _outside(name, seen, frozenset((*allowed, *IN_EVERY_KEY)))


def _outside(name: str, seen: set, allowed: frozenset, when: str = "") -> None:
    extra = sorted(seen - allowed)
    if extra:
        raise CacheKeyError(f"{name} read {extra}{when}, but no cache key it loads from covers "
                            "them: add them to a field list in gemkr/trained.py")


def _check_reads() -> None:
    """Before a stage stores its result: the fields read so far lie inside its key."""
    if _RECORDING:
        _outside(*_RECORDING[-1], when=" while training")


def _fields(cfg, names) -> dict:
    return {n: getattr(cfg, n) for n in names}


def _cache(cfg, name: str, parts: tuple, sources: tuple[str, ...], force: bool,
           device: str = "cpu"):
    """The stage cache of one trained part; the key includes whether it trains in bfloat16 here
    (``train_bf16`` and native support), so a machine without bfloat16 trains its own. The parts
    themselves are stored beside the key (`_save`) and compared on a hit (`_hit`)."""
    # not keyed by the number of processes: a part trained in N processes (the config's global
    # batch, split into micro-batches: `distributed.per_process`) is the one a later single-
    # process notebook or query loads; its run record says how many trained it
    key_parts = (*parts, cfg.seed, _bf16(cfg, device))
    cache = artifacts.stage_cache(artifacts_dir(cfg.profile, STAGE), name, key_parts=key_parts,
                                  force=force, sources=sources)
    cache.key_parts = json.loads(json.dumps(key_parts, sort_keys=True, default=str))
    return cache


def _hit(cache) -> bool:
    """Whether `cache` holds this stage's result: its key matches and the settings, upstream keys
    and data hashes it was stored for equal the ones in use (the key is a 16-digit hash of them:
    a hit is checked against what it stands for, and a difference is named)."""
    meta = cache.checked_meta()  # `_meta.json` read once, for the key and the parts
    if meta is None:
        return False
    stored = meta.get("key_parts")
    if stored != cache.key_parts:
        raise CacheKeyError(f"{cache.path} matches this run's cache key but was stored for other "
                            f"settings ({_difference(stored, cache.key_parts)}); delete the "
                            "folder and run again")
    return True


def _difference(stored, now) -> str:
    """The first differences between stored and current key parts, in words."""
    if not isinstance(stored, list) or len(stored) != len(now):
        return "no record of them" if stored is None else "another layout of them"
    out = []
    for i, (a, b) in enumerate(zip(stored, now, strict=True)):
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}"
                    for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"part {i}: stored {a!r}, now {b!r}")
    return "; ".join(out[:3])


def _bf16(cfg, device: str) -> bool:
    return bool(cfg.train_bf16) and bf16_native(device)


def _ckpt(cache) -> Path:
    return cache.path.parent / "_ckpt" / f"{cache.path.name}-{cache.key}"


def _save(cache, model, info: dict) -> None:
    from safetensors.torch import save_file

    _check_reads()
    # under N processes every one holds the same weights: the main one's go into the cache
    with cache.writing(**{k: v for k, v in info.items() if k != "history"},
                       key_parts=cache.key_parts) as tmp:
        save_file(train.trainable_state(model), str(tmp / "trainable.safetensors"))
        artifacts.write_json(tmp / "run.json", info)
    if distributed.is_main():
        shutil.rmtree(_ckpt(cache), ignore_errors=True)
    distributed.barrier()


def _load(cache, model) -> dict:
    from safetensors.torch import load_file

    train.load_trainable(model, load_file(str(cache.path / "trainable.safetensors")), cache.path)
    return json.loads((cache.path / "run.json").read_text())


def _missing(what: str, cache) -> NotTrainedError:
    return NotTrainedError(f"no trained {what} for these settings in {cache.path}: run notebook "
                           "04_training (or 06_ablations for a variant) first")


# ------------------------------------------------------------------------------ 1 vision tower
@keyed_by(VISION_FIELDS)
def vision_tower(cfg, bench, *, train_if_missing: bool = True, force: bool = False,
                 device: str = "cpu"):
    """(clip model, text tokenizer, run info, cache key) of the contrastively trained ViT."""
    cache = _cache(cfg, "vision", (bench.meta["content_hash"], _fields(cfg, VISION_FIELDS)),
                   ("vision.py", "pretrain.py", "train.py"), force, device)
    torch.manual_seed(cfg.seed)
    clip, tokenizer = create_clip(cfg, artifacts_dir(cfg.profile, STAGE) / "open_clip")
    if cfg.vision != "tiny_vit":  # EVA: pretrained, loaded from `eva_weights`, used as it is
        return clip, tokenizer, {"history": [], "seconds": 0.0,
                                 "pretrained": str(cfg.eva_weights)}, cache.key
    if _hit(cache):
        return clip.eval(), tokenizer, _load(cache, clip), cache.key
    if not train_if_missing:
        raise _missing("vision tower", cache)
    texts = pretrain.object_passages(bench)
    data = pretrain.pair_tensors(bench, "train", cfg.vit_image_size)
    test = pretrain.pair_tensors(bench, "test", cfg.vit_image_size)
    obj_text = pretrain.text_features(clip, tokenizer, texts)
    scene_text = pretrain.text_features(clip, tokenizer, data["scene_texts"])
    before = pretrain.zero_shot_accuracy(clip, test["crops"], test["objs"], obj_text)
    n_scenes = len(data["scenes"])
    bs, accum = distributed.per_process(cfg.vision_batch)
    steps = math.ceil(n_scenes / bs)
    out = train.fit(
        clip, lambda m, b: pretrain.contrastive_loss(m, *b),
        lambda e: pretrain.vision_batches(data, obj_text, scene_text, bs,
                                          np.random.default_rng([cfg.seed, 4, 1, e])),
        epochs=cfg.vision_epochs, steps_per_epoch=steps, lr=cfg.vision_lr,
        min_lr=cfg.vision_lr / 10, warmup_steps=min(20, math.ceil(steps / accum)),
        weight_decay=0.05, grad_accum=accum, ckpt_dir=_ckpt(cache), desc="vision pretraining",
        device=device, bf16=_bf16(cfg, device))
    after = pretrain.zero_shot_accuracy(clip, test["crops"], test["objs"], obj_text)
    info = {**out, "zero_shot_before": before, "zero_shot_after": after,
            "train_crops": len(data["crops"]), "train_scenes": n_scenes,
            "test_crops": len(test["crops"]), "objects": len(texts)}
    _save(cache, clip, info)
    return clip.eval(), tokenizer, info, cache.key


# ---------------------------------------------------------------------------- 2 knowledge LLM
def index_texts(index, tok, numbers) -> list[str]:
    """Passage texts as the index stores them (decoded token ids)."""
    return [clue_text(tok, index.passage_tokens(int(n))) for n in numbers]


def knowledge_starts(cfg, tok, sp, names: list[str]) -> list[list[int]]:
    """The context each passage follows in knowledge pretraining (and in the verbatim test):
    ``[bos]`` (``bos``) or the template naming the passage's entry alone (``recall``)."""
    if cfg.llm_pretrain_context == "bos":
        return [[sp.bos]] * len(names)
    after = template_ids(tok, sp.bos)[1]
    if cfg.llm_pretrain_context == "recall":
        from .detect import caption

        return [template_ids(tok, sp.bos, caption([n]))[0] + after for n in names]
    raise ValueError("llm_pretrain_context is 'bos' or 'recall', not "
                     f"{cfg.llm_pretrain_context!r}")


@keyed_by(LLM_FIELDS)
def knowledge_llm(cfg, index, tok, sp, probe: list[int], *, train_if_missing: bool = True,
                  force: bool = False, device: str = "cpu"):
    """(LLM, run info, cache key). ``tiny_llama`` is pretrained on the first
    ``llm_pretrain_tokens`` tokens of every passage of `index`; `probe` lists the index numbers
    of passages whose verbatim completion is measured (with a random sample of the rest)."""
    digest = index.content_key  # the whole KB it learns from, not a summary of it
    settings = _fields(cfg, LLM_FIELDS)
    # one folder per LLM setting: 06's in-kit LLaMA must not replace the profile's own LLM
    cache = _cache(cfg, f"llm-{artifacts.cache_key(settings)[:8]}", (digest, settings),
                   ("knowledge.py", "train.py", "model.py"), force, device)
    torch.manual_seed(cfg.seed)
    llm = build_llm(cfg, sp)
    if cfg.llm != "tiny_llama":
        if cfg.llm_pretrain_epochs == 0:  # a pretrained LLM used as it is
            return llm.eval(), {"history": [], "seconds": 0.0, "pretrained": cfg.llm}, cache.key
        # a pretrained LLM cut to its first blocks heals by training those blocks (and the final
        # norm) on the same recall task; its token embeddings (= tied output layer) stay as
        # pretrained, so the vocabulary keeps its meaning
        llm.get_input_embeddings().weight.requires_grad_(False)
    if _hit(cache):
        return llm.eval(), _load(cache, llm), cache.key
    if not train_if_missing:
        raise _missing("knowledge-pretrained LLM", cache)
    learn = knowledge.pretraining_set(index, probe, cfg.llm_pretrain_passages, cfg.seed)
    docs = knowledge.passage_starts(index, learn, cfg.llm_pretrain_tokens)
    vocab = knowledge.OutputVocab(docs, sp.eos, sp.vocab_size)
    n_probe = len(dict.fromkeys(probe))
    # the verbatim side measure on (at most) 200 object passages and 200 others: greedy decoding
    # without a KV cache costs minutes per thousand passages on a CPU
    probes = {"probe": slice(0, min(n_probe, 200)), "others": slice(n_probe, n_probe + 200)}
    texts = index_texts(index, tok, learn)
    names = [knowledge.passage_name(t) for t in texts]
    fillers = knowledge.gloss_fillers(texts)
    starts = knowledge_starts(cfg, tok, sp, names)
    before = {k: knowledge.verbatim_share(llm, docs[sl], starts[sl]) for k, sl in probes.items()}
    bs, accum = distributed.per_process(cfg.llm_pretrain_batch)

    def epoch_batches(e):
        rng = np.random.default_rng([cfg.seed, 4, 2, e])
        if cfg.llm_pretrain_context == "recall":
            return knowledge.recall_batches(docs, names, tok, sp.bos, sp.pad, bs, rng,
                                            fillers=fillers)
        return train.lm_batches(docs, bs, rng, sp.bos, sp.eos, sp.pad, add_eos=False)

    out = train.fit(
        llm, lambda m, b: knowledge.lm_loss_over(m, b, vocab), epoch_batches,
        epochs=cfg.llm_pretrain_epochs, steps_per_epoch=math.ceil(len(docs) / bs),
        lr=cfg.llm_pretrain_lr, min_lr=cfg.llm_pretrain_lr / 10,
        warmup_steps=min(100, cfg.llm_pretrain_epochs
                         * math.ceil(math.ceil(len(docs) / bs) / accum) // 10),
        weight_decay=0.01, grad_accum=accum, ckpt_dir=_ckpt(cache),
        desc="LLM knowledge pretraining", device=device, bf16=_bf16(cfg, device))
    after = {k: knowledge.verbatim_share(llm, docs[sl], starts[sl]) for k, sl in probes.items()}
    info = {**out, "passages": len(docs), "tokens": int(sum(len(d) for d in docs)),
            "output_vocab": len(vocab.ids),
            **{f"verbatim_{k}_before": v for k, v in before.items()},
            **{f"verbatim_{k}_after": v for k, v in after.items()}}
    _save(cache, llm, info)
    return llm.eval(), info, cache.key


# ------------------------------------------------------------------------------ 3 GeMKR model
def assemble(cfg, clip, llm, tok, sp, names=None) -> GeMKR:
    """GeMKR from its parts, with the switches of `cfg` (the ablations' single code path);
    `names`: the `name_lookup` of `cfg` (object tokens from the tower's naming)."""
    encoder = PrefixViT(clip.visual, prefix_len=cfg.prefix_len, dual_flow=cfg.dual_flow,
                        object_features=cfg.object_features, mask_empty=cfg.mask_empty_slots)
    if cfg.use_lora:
        llm = add_lora(llm, cfg)
    else:
        for p in llm.parameters():
            p.requires_grad_(False)
    tokens = visual_tokens(cfg, encoder.width, llm, cfg.visual_objects, names)
    if not cfg.use_image:  # no visual tokens: nothing of the vision side trains
        for p in [*encoder.parameters(), *tokens.parameters()]:
            p.requires_grad_(False)
    model = GeMKR(encoder, tokens, llm, tok, sp, use_image=cfg.use_image, use_text=cfg.use_text)
    model.choice_loss = float(cfg.choice_loss)
    model.visual_caption = (cfg.visual_caption if cfg.visual_layout == "objects"
                            and cfg.use_image and cfg.use_text else "off")
    model.decode_bf16 = bool(cfg.decode_bf16) and bf16_native(
        llm.get_input_embeddings().weight.device)
    return model


def visual_tokens(cfg, width: int, llm, n_objects: int, names=None) -> VisualTokens:
    """The visual-token projection of `cfg`'s layout, started at the scale of the LLM's token
    embeddings (`names`: the name lookup of `uses_names` configs)."""
    from .examples import GEOMETRY

    if uses_names(cfg) and names is None:
        raise ValueError("object_names needs the name lookup (trained.name_lookup): pass names=")
    emb = llm.get_input_embeddings().weight
    std = emb.detach().std()
    geometry = len(GEOMETRY) if cfg.box_features and cfg.visual_layout == "objects" else 0
    return VisualTokens(width, emb.shape[1], n_objects=n_objects,
                        out_std=None if std.is_meta else float(std),  # meta: shapes only
                        layout=cfg.visual_layout, geometry=geometry,
                        names=names if uses_names(cfg) else None)


def uses_names(cfg) -> bool:
    """Whether `cfg`'s object tokens come from the name lookup (objects layout, features on)."""
    return bool(cfg.object_names and cfg.visual_layout == "objects" and cfg.object_features
                and cfg.use_image)


@torch.no_grad()
def name_lookup(cfg, bench, clip, clip_tokenizer, llm, tok):
    """The `vision.NameLookup` of `cfg` (None when its object tokens do not use it): the tower's
    text features of every object's passage and the LLM's input embeddings of each object's name
    (" " + the objects table's name: the word the detector's caption uses), its first
    ``name_tokens`` tokens one per position, or their mean in one position (``name_tokens=1``).
    Deterministic from the trained tower and LLM, so nothing of it is cached."""
    from .pretrain import object_passages, text_features
    from .vision import NameLookup

    if not uses_names(cfg):
        return None
    visual = clip.visual
    if not (hasattr(visual, "ln_post") and getattr(visual, "proj", None) is not None):
        raise ValueError("object_names needs an open_clip tower with ln_post and proj (the "
                         "kit's ViT); set object_names=False for this vision tower")
    passages = object_passages(bench)
    feats = text_features(clip, clip_tokenizer, passages)
    emb = llm.get_input_embeddings().weight
    names = bench.objects["name"].tolist()  # row i = object id i, as `object_passages`
    spelled = emb.new_zeros(len(names), cfg.name_tokens, emb.shape[1])
    valid = torch.zeros(len(names), cfg.name_tokens, dtype=torch.bool)
    first = []
    for i, name in enumerate(names):
        ids = name_ids(tok, name)
        first.append(ids[0])
        rows = emb[torch.tensor(ids)]
        if cfg.name_tokens == 1:
            rows = rows.mean(0, keepdim=True)
        rows = rows[:cfg.name_tokens]  # a longer name is cut (1 of 478 names has > 4 tokens)
        spelled[i, :len(rows)], valid[i, :len(rows)] = rows, True
    return NameLookup(visual.ln_post.weight, visual.ln_post.bias, visual.ln_post.eps,
                      visual.proj, feats, spelled, valid, cfg.name_sharpness, first)


def aligns(cfg) -> bool:
    """Whether `cfg` has an alignment stage: object tokens (layout "objects") made by the
    Linear of object features (not the name lookup), in a model that reads visual tokens."""
    return (cfg.align_epochs > 0 and cfg.use_image and cfg.object_features
            and cfg.visual_layout == "objects" and not uses_names(cfg))


@keyed_by(ALIGN_FIELDS)
def aligned_tokens(cfg, llm, tok, sp, inputs: dict, objects, targets: list[list[int]],
                   upstream: tuple, probe_objects=None, probe_targets: dict | None = None, *,
                   train_if_missing: bool = True, force: bool = False, device: str = "cpu"):
    """(visual-token state dict, run info, cache key) after the alignment stage, or (None, {},
    "") when `cfg` has none (`aligns`).

    LLaVA's and MiniGPT-4's first stage, on the kit's objects: the LLM (after stage 2) stays
    frozen and reads the prompt with no question and one object's token at ``<ImageHere>``; the
    projection learns to make that token say the object's clue. `objects` are the examples
    (`examples.alignment_objects`), `targets` their clue token ids; `upstream` the cache keys of
    the vision tower, the LLM and the detections. Every GeMKR variant with the same key starts
    from these weights (the ablations switch components in instruction tuning). With
    `probe_objects` (held-out objects, same columns) and `probe_targets` (pid -> clue ids of
    every candidate), `probe.object_naming` is measured before and after the stage."""
    from .probe import object_naming

    if not aligns(cfg):
        return None, {}, ""
    data = artifacts.cache_key(objects[["row", "slot", "pid"]].to_numpy().tolist(), targets)
    settings = _fields(cfg, ALIGN_FIELDS)
    # one folder per key: 06's variants on other detections or another LLM align their own
    # projection and must not replace the one the full model starts from
    parts = (*upstream, data, settings)
    cache = _cache(cfg, f"align-{artifacts.cache_key(parts)[:8]}", parts,
                   ("model.py", "vision.py", "examples.py", "train.py", "trained.py"), force,
                   device)
    frozen = {n: p.requires_grad for n, p in llm.named_parameters()}
    for p in llm.parameters():
        p.requires_grad_(False)
    width = inputs["objects"].shape[-1]
    torch.manual_seed(cfg.seed)  # the projection's initial weights, whatever ran before
    model = GeMKR(None, visual_tokens(cfg, width, llm, 1), llm, tok, sp, use_text=False)
    try:
        if _hit(cache):
            info = _load(cache, model)
        elif not train_if_missing:
            raise _missing("alignment stage", cache)
        else:
            naming = {}
            if probe_objects is not None and len(probe_objects):
                naming["naming_before"], naming["naming_chance"] = object_naming(
                    model.eval(), inputs, probe_objects, probe_targets, seed=cfg.seed,
                    bf16=_bf16(cfg, device))
            bs, accum = distributed.per_process(cfg.align_batch)
            out = train.fit(
                model, lambda m, b: m.align_loss(b),
                lambda e: examples.alignment_batches(objects, inputs, targets, bs,
                                                     np.random.default_rng([cfg.seed, 4, 5, e])),
                epochs=cfg.align_epochs, steps_per_epoch=math.ceil(len(objects) / bs),
                lr=cfg.align_lr, min_lr=cfg.align_lr / 10,
                warmup_steps=min(20, math.ceil(len(objects) / bs / accum)), weight_decay=0.0,
                grad_accum=accum, ckpt_dir=_ckpt(cache), desc="alignment", device=device,
                bf16=_bf16(cfg, device))
            if naming:
                naming["naming_after"], _ = object_naming(model.eval(), inputs, probe_objects,
                                                          probe_targets, seed=cfg.seed,
                                                          bf16=_bf16(cfg, device))
                naming["naming_objects"] = len(probe_objects)
            info = {**out, **naming, "objects": len(objects),
                    "distinct_objects": int(objects["obj"].nunique())}
            _save(cache, model, info)
    finally:
        for n, p in llm.named_parameters():
            p.requires_grad_(frozen[n])
    state = {k: v.detach().clone() for k, v in model.visual_tokens.state_dict().items()}
    return state, info, cache.key


def train_subset(questions, n: int | None, seed: int):
    """All training questions, or a fixed random subset of `n` (the ablations' schedule)."""
    if n is None or n >= len(questions):
        return questions.reset_index(drop=True)
    keep = np.random.default_rng([seed, 4, 3]).choice(len(questions), size=n, replace=False)
    return questions.iloc[np.sort(keep)].reset_index(drop=True)


@keyed_by(GEMKR_FIELDS, also=DECODING_ONLY)
def gemkr_model(cfg, clip, llm, tok, sp, inputs: dict, questions, targets: list[list[int]],
                upstream: tuple, *, variant: str = "full", aligned: dict | None = None,
                names=None, train_if_missing: bool = True, force: bool = False,
                device: str = "cpu"):
    """(GeMKR, run info): instruction tuning of the trainable parts on (question, clue) pairs.

    `inputs` are the scene inputs (`scene_inputs`), `questions` the training questions
    (with ``text`` and ``question`` columns) and `targets` their clue token ids; `upstream` the
    cache keys of the vision tower, the LLM, the detections and the alignment stage, whose
    visual-token weights (`aligned`) tuning starts from; `names` the `name_lookup` (computed
    from the tower and the LLM of `upstream`, so covered by their keys)."""
    # keyed by the data it really trains on (questions, their input texts and clue targets, so
    # the knowledge base the targets come from), not only by the settings listed in GEMKR_FIELDS
    data = artifacts.cache_key(questions["qid"].tolist(), questions["text"].tolist(), targets)
    cache = _cache(cfg, f"gemkr-{variant}", (*upstream, data, _fields(cfg, GEMKR_FIELDS)),
                   ("model.py", "vision.py", "examples.py", "train.py", "trained.py"), force,
                   device)
    # the fresh weights (LoRA, prefix rows, gates, projection) start from the seed, not from
    # whatever random numbers the process drew before (05 and 06 train variants in one process)
    torch.manual_seed(cfg.seed)
    model = assemble(cfg, clip, llm, tok, sp, names)
    if aligned is not None:
        model.visual_tokens.load_state_dict(aligned)
    if _hit(cache):
        return model.eval(), {**_load(cache, model), "cache_key": cache.key}
    if not train_if_missing:
        raise _missing(f"GeMKR model ({variant})", cache)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    bs, accum = distributed.per_process(cfg.batch_size, cfg.grad_accum)
    out = train.fit(
        model, lambda m, b: m(b),
        lambda e: examples.batches(questions, inputs, targets, bs,
                                   np.random.default_rng([cfg.seed, 4, 4, e]),
                                   caption_dropout=cfg.caption_dropout if cfg.use_caption
                                   and cfg.use_text else 0.0),
        epochs=cfg.epochs, steps_per_epoch=math.ceil(len(questions) / bs), lr=cfg.lr,
        min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        grad_accum=accum, ckpt_dir=_ckpt(cache), desc=f"GeMKR tuning ({variant})",
        device=device, bf16=_bf16(cfg, device))
    unchanged = all(torch.equal(p, base[n]) for n, p in model.named_parameters()
                    if not p.requires_grad)
    info = {**out, "variant": variant, "train_questions": len(questions),
            "base_weights_unchanged": unchanged, "trainable": model.trainable_parameters(),
            "settings": _fields(cfg, GEMKR_FIELDS)}
    _save(cache, model, info)
    return model.eval(), {**info, "cache_key": cache.key}


# ------------------------------------------------------------------------- the whole pipeline
def detections(cfg, bench):
    """(detections, captions) the model reads: notebook 02's boxes with a score >= `det_conf`
    (a variant may read fewer than 02 kept: filtering by score equals predicting at the higher
    threshold), or the exact boxes when ``det_oracle_boxes`` (smoke profile; the oracle-box
    ablation); the captions name the labels with a score >= `caption_conf`."""
    from . import detect

    if cfg.det_oracle_boxes:
        dets = detect.oracle_detections(bench, cfg.max_objects)
    else:
        dets, _ = detect.load_detections(cfg.profile)
        dets = dets[dets["score"] >= cfg.det_conf].reset_index(drop=True)
    return dets, detect.scene_captions(dets, bench.scenes["scene_id"], cfg.caption_conf)


@keyed_by(("vit_image_size", "max_objects"))
def scene_inputs(cfg, bench, dets, clip, vision_key: str, force: bool = False) -> dict:
    """`examples.scene_inputs` (images, detected objects' CLS features, masks), cached as
    safetensors next to the models: computing them runs the frozen ViT over every detected crop
    (about a minute on 2 cores), and notebooks 05, 06 and 08 each need them again."""
    from safetensors.torch import load_file, save_file

    dkey = table_key(dets)
    cache = _cache(cfg, f"inputs-{dkey[-8:]}", (bench.meta["content_hash"], vision_key, dkey,
                                                cfg.vit_image_size, cfg.max_objects),
                   ("examples.py", "vision.py", "pretrain.py"), force)
    if _hit(cache):
        return {**load_file(str(cache.path / "inputs.safetensors")),
                "row": examples.scene_rows(bench)}
    inputs = examples.scene_inputs(bench, dets, clip.visual, cfg.vit_image_size, cfg.max_objects)
    with cache.writing(scenes=len(inputs["row"]), key_parts=cache.key_parts) as tmp:
        save_file({k: v.contiguous() for k, v in inputs.items() if k != "row"},
                  str(tmp / "inputs.safetensors"))
    return inputs


def table_key(df) -> str:
    """A content key of a table (for cache keys of what was computed from it)."""
    import pandas as pd

    return str(int(pd.util.hash_pandas_object(df, index=False).sum()))


@dataclasses.dataclass
class Pipeline:
    """Everything notebooks 05-08 need: data, indexes, scene inputs and the trained model."""

    cfg: object
    bench: object
    tok: object
    sp: object
    indexes: dict
    captions: dict
    dets: object
    inputs: dict
    clip: object
    clip_tokenizer: object
    model: GeMKR
    info: dict

    def questions(self, split: str):
        """A split's questions with the model input ``text`` of this configuration."""
        from .probe import scene_labels

        return examples.model_questions(self.bench.split(split), self.captions,
                                        self.cfg.use_caption,
                                        scene_labels(self.dets, self.cfg.caption_conf))


@keyed_by(PIPELINE_FIELDS)
def pipeline(cfg, *, variant: str = "full", train_if_missing: bool = False,
             force: bool = False, device: str = "cpu", parts: Pipeline | None = None) -> Pipeline:
    """Load (or, with `train_if_missing`, train) GeMKR for `cfg` with everything around it.

    `parts`: a pipeline of the same profile whose benchmark, indexes, vision tower and LLM are
    reused (the ablations change only what sits on top of them)."""
    from .data import build_benchmark
    from .kb_index import kb_index
    from .tokenizer import load_tokenizer, specials

    if parts is None:
        bench = build_benchmark(cfg)
        tok = load_tokenizer(cfg.tokenizer)
        sp = specials(tok)
        indexes = {n: kb_index(cfg.profile, n, kb, tok, cfg.tokenizer)
                   for n, kb in bench.kb.items()}
        clip, clip_tok, vinfo, vkey = vision_tower(cfg, bench, train_if_missing=train_if_missing,
                                                   device=device)
    else:
        bench, tok, sp, indexes, clip, clip_tok = (parts.bench, parts.tok, parts.sp,
                                                   parts.indexes, parts.clip, parts.clip_tokenizer)
        vinfo, vkey = parts.info["vision"], parts.info["vision_key"]
    first = indexes[cfg.kb_names[0]]
    gold = [first.number_of(p) for p in bench.questions["gold_pid"].unique().tolist()]
    # a fresh copy of the pretrained LLM for every variant (LoRA is injected in place)
    llm, linfo, lkey = knowledge_llm(cfg, first, tok, sp, gold, train_if_missing=train_if_missing,
                                     device=device)
    dets, captions = detections(cfg, bench)
    if parts is not None and table_key(dets) == table_key(parts.dets):
        inputs = parts.inputs  # same boxes, same frozen encoder: same scene inputs
    else:
        inputs = scene_inputs(cfg, bench, dets, clip, vkey)
    questions = train_subset(examples.model_questions(bench.split("train"), captions,
                                                      cfg.use_caption),
                             cfg.train_questions, cfg.seed)
    targets, _ = examples.clue_targets(questions, indexes[cfg.kb_names[-1]],
                                       cfg.clue_max_tokens, cfg.min_clue_tokens)
    aligned, ainfo, akey = alignment(cfg, bench, dets, inputs, llm, tok, sp, indexes,
                                     (vkey, lkey, table_key(dets)),
                                     train_if_missing=train_if_missing, device=device)
    names = _shared_lookup(cfg, parts, lkey)
    if names is None:
        names = name_lookup(cfg, bench, clip, clip_tok, llm, tok)
    model, ginfo = gemkr_model(cfg, clip, llm, tok, sp, inputs, questions, targets,
                               (vkey, lkey, table_key(dets), akey), variant=variant,
                               aligned=aligned, names=names, train_if_missing=train_if_missing,
                               force=force, device=device)
    info = {"vision": vinfo, "vision_key": vkey, "llm": linfo, "llm_key": lkey,
            "align": ainfo, "align_key": akey, "gemkr": ginfo}
    return Pipeline(cfg, bench, tok, sp, indexes, captions, dets, inputs, clip, clip_tok, model,
                    info)


def _shared_lookup(cfg, parts: Pipeline | None, llm_key: str):
    """A copy of `parts`' name lookup when `cfg`'s would be the same (the same tower and
    stage-2 LLM, the same `name_tokens` and `name_sharpness`), else None: the lookup is
    deterministic from those, and recomputing it (the tower's text features of every object
    passage) was most of a `smoke` ablation variant's time and ~9 s of a `default` one."""
    if parts is None or not uses_names(cfg) or parts.info.get("llm_key") != llm_key:
        return None
    names = getattr(parts.model.visual_tokens, "names", None)
    if names is None or any(getattr(cfg, f) != getattr(parts.cfg, f)
                            for f in ("name_tokens", "name_sharpness")):
        return None
    return copy.deepcopy(names)


def alignment(cfg, bench, dets, inputs: dict, llm, tok, sp, indexes: dict, upstream: tuple, *,
              train_if_missing: bool = True, force: bool = False, device: str = "cpu"):
    """The alignment stage of `cfg` from the benchmark: its examples (detected objects of the
    train scenes matched to the objects training questions ask about) and their clue targets
    (the gold passages' clues, as in tuning); see `aligned_tokens`."""
    if not aligns(cfg):
        return None, {}, ""
    def pids(q):
        return dict(zip(q["target_obj"].astype(int), q["gold_pid"].astype(int), strict=True))

    def clues(pid_list):
        frame = pd.DataFrame({"qid": range(len(pid_list)), "gold_pid": pid_list})
        return examples.clue_targets(frame, indexes[cfg.kb_names[-1]], cfg.clue_max_tokens,
                                     cfg.min_clue_tokens)[0]

    objects = examples.alignment_objects(bench, dets, inputs, pids(bench.split("train")))
    every = pids(bench.questions)  # the held-out probe: test-scene objects among all objects
    held_out = examples.alignment_objects(bench, dets, inputs, every, split="test")
    held_out = held_out.sample(n=min(300, len(held_out)), random_state=0).sort_index()
    pool = sorted(set(every.values()))
    return aligned_tokens(cfg, llm, tok, sp, inputs, objects, clues(objects["pid"].tolist()),
                          upstream, held_out, dict(zip(pool, clues(pool), strict=True)),
                          train_if_missing=train_if_missing, force=force, device=device)
