"""Notebook 06's variants: each is a set of config switches (training) and/or decoding settings
applied to the one code path of `trained` and `decoding`, never a copy of code.

Every trained variant uses the same shorter schedule (``ablation_epochs`` over
``ablation_train_questions`` questions), the full model included, so differences come from the
switch and not from the schedule. Decoding variants reuse the full model of that schedule.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from .tokenizer import clue_text


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    what: str  # one line for the table
    train: dict = field(default_factory=dict)  # config overrides (retrains)
    decode: dict = field(default_factory=dict)  # DecodeConfig changes (reuses the full model)


VARIANTS = (
    Variant("full model", "reference", "object tokens = the tower's naming + box, a visual "
            "caption where the caption is dropped; object-aware prefix, dual-flow, LoRA"),
    Variant("paper's visual tokens", "visual tokens",
            "CLS + 2 prefix rows (E + R), no boxes, no alignment (the paper's layout)",
            train={"visual_layout": "paper", "visual_objects": 2, "box_features": False}),
    Variant("w/o visual caption", "visual tokens",
            "the object tokens stay at <ImageHere> (not where a caption's names go)",
            train={"visual_caption": "off"}),
    Variant("visual caption without the caption only", "visual tokens",
            "object tokens where the caption's names go only in prompts without the caption "
            "(the previous default)", train={"visual_caption": "dropped"}),
    Variant("projection instead of names", "visual tokens",
            "object token = Linear(crop feature) + box, trained in tuning only (no name lookup, "
            "no alignment)", train={"object_names": False, "align_epochs": 0}),
    Variant("one token per name", "visual tokens",
            "an object's naming in one token (the mean embedding of each name's tokens), not "
            "spelled over the name's tokens (the previous default)", train={"name_tokens": 1}),
    Variant("aligned projection instead of names", "visual tokens",
            "object token = Linear(crop feature) + box after the alignment stage (the previous "
            "default)", train={"object_names": False}),
    Variant("confident boxes only", "detector",
            "object tokens only for the boxes the caption names (score >= caption_conf, "
            "ultralytics' default 0.25), not every box >= det_conf", train={"det_conf": 0.25}),
    Variant("caption of every box", "detector",
            "the caption names every box >= det_conf, not only those >= caption_conf",
            train={"caption_conf": 0.05}),
    Variant("w/o box features", "visual tokens", "object tokens without their boxes",
            train={"box_features": False}),
    Variant("w/o choice loss", "training", "the paper's loss only: no cross-entropy among the "
            "prompt's names at the clue's first token", train={"choice_loss": 0.0}),
    Variant("w/o caption dropout", "input", "every tuning example reads its caption",
            train={"caption_dropout": 0.0}),
    Variant("w/o object features", "visual prefix", "prefix = learned rows only",
            train={"object_features": False}),
    Variant("w/o dual-flow attention", "visual prefix", "prefix keys joined to the image softmax",
            train={"dual_flow": False}),
    Variant("w/o LoRA", "LLM", "LLM fully frozen; only the visual side trains",
            train={"use_lora": False}),
    Variant("w/o object features & LoRA", "LLM", "both removed",
            train={"object_features": False, "use_lora": False}),
    Variant("caption instead of image", "input", "no visual tokens; question + caption",
            train={"use_image": False}),
    Variant("image only", "input", "question + visual tokens; no caption (the caption's names "
            "must come from the image)", train={"use_caption": False}),
    Variant("visual tokens alone", "input", "visual tokens; no question, no caption",
            train={"use_text": False}),
    Variant("question only", "input", "no visual tokens, no caption",
            train={"use_image": False, "use_caption": False}),
    Variant("oracle boxes", "detector", "exact boxes instead of YOLO's, train and test",
            train={"det_oracle_boxes": True}),
    Variant("unconstrained decoding", "decoding", "free beam search; clues mapped afterwards",
            decode={"constrained": False}),
    Variant("official clue rules", "decoding", "cap only: no stop-when-unique, no minimum length",
            decode={"stop_when_unique": False, "min_clue_tokens": 1}),
    Variant("clue cap 4 tokens", "decoding", "max_clue_tokens 4 instead of 9",
            decode={"max_clue_tokens": 4}),
    Variant("plain beams", "decoding", "10 beams in one group, no diversity penalty",
            decode={"num_beam_groups": 1, "diversity_penalty": 0.0}),
    Variant("free first token", "decoding", "a clue may open with any token the index allows "
            "(the paper's decoding), not only with a name its prompt holds",
            decode={"first_token": "free"}),
    # the LLM-scale study on one schedule: the in-kit LLaMA (4 blocks x 256, random init) goes
    # through the same stage 2 as the default reader (same passages, template, epochs, lr) and
    # the same GeMKR tuning. (The kit's earlier 25-epoch stage 2 of this LLM, 6.7 min, left it
    # at R@5 0.003 too.)
    Variant("in-kit LLaMA instead of SmolLM2", "LLM scale",
            "4-block random LLaMA; same stage 2 and tuning as the reader",
            train={"llm": "tiny_llama", "llm_blocks": None, "llm_last_blocks": 0}),
)


def selected(cfg) -> tuple[Variant, ...]:
    """The variants `cfg` runs (``ablation_variants``; None = all), in `VARIANTS` order, the full
    model first; an unknown name is a KeyError naming the choices."""
    if cfg.ablation_variants is None:
        return VARIANTS
    wanted = {variant(n).name for n in cfg.ablation_variants} | {VARIANTS[0].name}
    return tuple(v for v in VARIANTS if v.name in wanted)


def variant_config(cfg, variant: Variant):
    """The config a variant trains with: the common ablation schedule plus its switches."""
    return dataclasses.replace(cfg, epochs=cfg.ablation_epochs,
                               train_questions=cfg.ablation_train_questions, **variant.train)


def table() -> pd.DataFrame:
    """The variants as a table (name, group, what, switches)."""
    return pd.DataFrame([{"variant": v.name, "group": v.group, "what": v.what,
                          "switches": ", ".join(f"{k}={val}" for k, val in
                                                (v.train | v.decode).items()) or "-"}
                         for v in VARIANTS])


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def variant(name: str) -> Variant:
    """The variant called `name` (KeyError naming the choices otherwise)."""
    for v in VARIANTS:
        if v.name == name:
            return v
    raise KeyError(f"no ablation variant {name!r}; choose one of {[v.name for v in VARIANTS]}")


def trained_variant(cfg, name: str, base, device: str = "cpu"):
    """Train (or load from its cache) the pipeline of a trained variant on the ablation schedule.

    Notebook 05 trains the full model and "caption instead of image" this way for its
    per-reference-kind table; 06 then finds both in the cache."""
    from . import trained

    v = variant(name)
    if v.decode:
        raise ValueError(f"{name!r} only changes decoding; it reuses the 'full model' pipeline")
    return trained.pipeline(variant_config(cfg, v), variant=f"ablation-{slug(v.name)}",
                            train_if_missing=True, device=device, parts=base)


def run_variants(cfg, base, kb_name: str, variants=VARIANTS, device: str = "cpu",
                 progress: bool = True):
    """Train (or load) and score every variant on the test split of `kb_name`.

    `base` is the full pipeline of notebook 04 (benchmark, indexes, vision tower and LLM are
    shared). Returns (scores with one row per variant and relevance mode, runs by variant name,
    training info by variant name)."""
    from . import evaluate
    from .decoding import DecodeConfig
    from .passage_file import passage_texts
    from .progress import bar

    texts = passage_texts(base.bench.kb[kb_name])
    pipes, rows, runs, infos = {}, [], {}, {}
    for v in bar(variants, desc="ablation variants", disable=not progress):
        if v.decode and VARIANTS[0].name in pipes:
            p = pipes[VARIANTS[0].name]
        else:
            p = trained_variant(cfg, VARIANTS[0].name if v.decode else v.name, base, device)
            pipes[v.name] = p
            infos[v.name] = p.info["gemkr"]
        questions = p.questions("test")
        if cfg.ablation_eval_queries and cfg.ablation_eval_queries < len(questions):
            questions = questions.sample(n=cfg.ablation_eval_queries, random_state=cfg.seed
                                         ).sort_index().reset_index(drop=True)
        dcfg = DecodeConfig.from_config(cfg, **v.decode)
        run = evaluate.gemkr_search(p.model, p.inputs, questions, p.indexes[kb_name], dcfg,
                                    desc=v.name)
        runs[v.name] = run
        run.qids = questions["qid"].tolist()
        run.fingerprint = fingerprint(p, dcfg, questions)
        rows.append(evaluate.score(run, questions, texts, cfg.eval_ks, cfg.answer_lowercase)
                    .assign(variant=v.name, group=v.group, seconds_per_query=run.seconds /
                            max(len(questions), 1)))
    return pd.concat(rows, ignore_index=True), runs, infos


def fingerprint(p, dcfg, questions) -> dict:
    """What a variant's retrieval is made of: the trained model's cache key, the switches the
    model really runs with, the first prompt it reads, the boxes and the decoding settings."""
    from .trained import table_key

    m = p.model
    return {"cache_key": p.info["gemkr"].get("cache_key"), "decode": repr(dcfg),
            "image": m.use_image, "text": m.use_text,
            "object_features": m.encoder.object_features, "dual_flow": m.encoder.dual_flow,
            "lora": any("lora_" in n for n, _ in m.named_parameters()),
            "llm": f"{m.llm.config.model_type}/{m.llm.config.hidden_size}"
                   f"x{m.llm.config.num_hidden_layers}",
            "visual_tokens": f"{m.visual_tokens.layout}/{m.visual_tokens.n_objects}"
                             f"{'+boxes' if m.visual_tokens.geo is not None else ''}"
                             f"{'+names' if m.visual_tokens.names is not None else ''}"
                             f"x{m.visual_tokens.per_object}",
            "visual_caption": m.visual_caption,
            "aligned": p.info.get("align_key", ""), "caption_dropout": p.cfg.caption_dropout,
            "choice_loss": m.choice_loss,
            "prompt": questions["text"].iloc[0] if len(questions) else "",
            "boxes": table_key(p.dets)}


def no_op(cfg, v: Variant) -> bool:
    """A variant whose switches are already the profile's settings: a trained one such as oracle
    boxes in `smoke` (which always uses the exact boxes, where the detector's thresholds change
    nothing either), a decoding one such as "free first token" in `paper` (which decodes free).
    It is the full model under another name."""
    if v.decode:
        from .decoding import DecodeConfig

        return DecodeConfig.from_config(cfg, **v.decode) == DecodeConfig.from_config(cfg)
    thresholds = ("det_conf", "caption_conf")
    return bool(v.train) and all(getattr(cfg, k) == x or (cfg.det_oracle_boxes and k in thresholds)
                                 for k, x in v.train.items())


def variant_problems(runs: dict, cfg) -> list[str]:
    """Variants that do not change what they claim (06's check): a trained variant must have its
    own cache key and differ from the full model in what the model reads or runs; a decoding
    variant must reuse the full model and decode differently; no two variants may be equal.
    Variants that are no-ops in this profile (`no_op`) are exempt."""
    skip = {v.name for v in VARIANTS if no_op(cfg, v)}
    prints = {name: run.fingerprint for name, run in runs.items() if name not in skip}
    # (variants left out by ``ablation_variants`` have no run: nothing to check)
    full = prints[VARIANTS[0].name]
    problems = []
    for v in VARIANTS[1:]:
        fp = prints.get(v.name)  # None: not run, or a no-op here
        if fp is None:
            continue
        rest = {k: x for k, x in fp.items() if k not in ("cache_key", "decode")}
        full_rest = {k: x for k, x in full.items() if k not in ("cache_key", "decode")}
        if v.train and (fp["cache_key"] == full["cache_key"] or rest == full_rest):
            problems.append(f"{v.name}: same trained model or same inputs as the full model")
        if v.decode and (fp["cache_key"] != full["cache_key"] or fp["decode"] == full["decode"]):
            problems.append(f"{v.name}: should reuse the full model and decode differently")
    seen: dict[str, str] = {}
    for name, fp in prints.items():
        key = repr(sorted(fp.items()))
        if key in seen:
            problems.append(f"{name} equals {seen[key]}")
        seen[key] = name
    return problems


def clue_table(runs: dict, tok) -> pd.DataFrame:
    """Every clue of every variant's run: variant, qid, rank, clue text, tokens, corpus count
    and number of passages it maps to."""
    rows = [{"variant": name, "qid": qid, "rank": r, "clue": clue_text(tok, c.tokens),
             "tokens": len(c.tokens), "count": c.count, "passages": len(c.docs)}
            for name, run in runs.items() for qid, clues in zip(run.qids, run.clues, strict=True)
            for r, c in enumerate(clues)]
    return pd.DataFrame(rows)


def save_clues(profile: str, clues: pd.DataFrame):
    """Write the variants' clues for notebook 07 (``artifacts/<profile>/06_ablations/``)."""
    from .artifacts import atomic_path
    from .paths import artifacts_dir

    path = artifacts_dir(profile, "06_ablations") / "clues.parquet"
    with atomic_path(path) as tmp:
        clues.to_parquet(tmp, index=False)
    return path


def load_clues(profile: str) -> pd.DataFrame:
    from .paths import artifacts_dir

    path = artifacts_dir(profile, "06_ablations") / "clues.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no variant clues in {path}: run notebook 06_ablations first")
    return pd.read_parquet(path)


def paired_intervals(runs: dict, gold_by_qid: dict, reference: str = "full model", k: int = 5,
                     seed: int = 0) -> pd.DataFrame:
    """Each variant's R@k (gold passage) minus the reference's on the same questions, with a
    paired bootstrap 95 % interval; ``interval_excludes_zero`` says whether the difference is
    more than resampling noise."""
    from .metrics import gold_hits, paired_bootstrap

    ref = runs[reference]
    ref_hits = gold_hits(ref.ranked, [gold_by_qid[q] for q in ref.qids], k)
    rows = []
    for name, run in runs.items():
        if name == reference:
            continue
        if run.qids != ref.qids:
            raise ValueError(f"variant {name!r} was scored on other questions than {reference!r}")
        hits = gold_hits(run.ranked, [gold_by_qid[q] for q in run.qids], k)
        diff, lo, hi = paired_bootstrap(hits, ref_hits, seed=seed)
        rows.append({"variant": name, f"R@{k}": hits.mean(), f"R@{k} {reference}": ref_hits.mean(),
                     f"ΔR@{k} vs {reference}": diff, "ci95_low": lo, "ci95_high": hi,
                     "interval_excludes_zero": bool(lo > 0 or hi < 0), "n_queries": len(hits)})
    return pd.DataFrame(rows)


def llm_scale(cfg, scores: pd.DataFrame, kb_name: str) -> pd.DataFrame:
    """The paper's LLM-scale comparison, runnable on a CPU: this profile's LLM and the in-kit
    LLaMA on the ablation schedule (rows of `scores`), plus the `small` profile's full-depth
    SmolLM2 from its notebook 05 when that has run (its own, longer schedule)."""
    from .paths import results_dir

    gold = scores[scores.relevance == "gold_id"].set_index("variant")
    name = {"smollm2": "SmolLM2-135M"}.get(cfg.llm, cfg.llm)
    if cfg.llm_blocks is not None:
        name += f", first {cfg.llm_blocks} + last {cfg.llm_last_blocks} blocks, healed"
    rows = [{"llm": f"{name} ({cfg.profile})", "schedule": "ablation", "kb": kb_name,
             **gold.loc["full model", ["R@1", "R@5"]].to_dict()},
            {"llm": "in-kit LLaMA, 4 blocks x 256, from scratch",
             **({"schedule": "ablation", "kb": kb_name,
                 **gold.loc["in-kit LLaMA instead of SmolLM2", ["R@1", "R@5"]].to_dict()}
                if "in-kit LLaMA instead of SmolLM2" in gold.index else
                {"schedule": "not run (ablation_variants)", "kb": kb_name, "R@1": None,
                 "R@5": None})}]
    path = results_dir("small") / "05_main_results.csv"
    small = None
    if path.exists():
        small = pd.read_csv(path).query("method == 'GeMKR' and split == 'test' and "
                                        f"relevance == 'gold_id' and kb == '{kb_name}'")
    rows.append({"llm": "SmolLM2-135M, all 30 blocks (small)", "schedule":
                 "small profile (05)" if small is not None and len(small) else "not run (GPU)",
                 "kb": kb_name,
                 **({"R@1": small["R@1"].iloc[0], "R@5": small["R@5"].iloc[0]}
                    if small is not None and len(small) else {"R@1": None, "R@5": None})})
    return pd.DataFrame(rows)
