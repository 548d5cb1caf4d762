"""OKMoji: scenes, splits and questions of the built-in benchmark (DESIGN §4).

Pipeline: pick the object pool and the held-out `test_unseen` objects -> plan scenes per split
(objects and a seed each) -> render them (exact boxes) -> generate questions. Every random choice
comes from generators derived from ``cfg.seed``, so the same config gives the same benchmark.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..artifacts import atomic_path
from .questions import answers_from_passage, leaks, references, template_for
from .render import Placement, render_scene
from .wordnet import Synset

SPLITS = ("train", "val", "test", "test_unseen")


def _interleave_by_category(objects: pd.DataFrame, rng: np.random.Generator) -> list[int]:
    """Object rows shuffled within category, then dealt round-robin across categories, so any
    prefix of the list covers every category evenly."""
    groups = [list(rng.permutation(g.index.to_numpy()))
              for _, g in objects.groupby("category", sort=True)]
    out = []
    while any(groups):
        for g in groups:
            if g:
                out.append(int(g.pop()))
    return out


def choose_objects(objects: pd.DataFrame, n_objects: int | None, n_unseen: int,
                   rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(seen, unseen) object rows: a category-balanced pool, and the held-out objects in it."""
    order = _interleave_by_category(objects, rng)
    pool = order[: n_objects or len(order)]
    if not 0 < n_unseen < len(pool) - 4:
        raise ValueError(f"n_unseen_objects={n_unseen} must leave >= 5 seen objects of {len(pool)}")
    unseen = pool[-n_unseen:]  # the tail of a round-robin deal is category-balanced too
    return sorted(pool[:-n_unseen]), sorted(unseen)


def plan_scenes(cfg, seen: list[int], unseen: list[int], rng: np.random.Generator) -> pd.DataFrame:
    """One row per scene: scene_id, split, seed, objs (object rows; in test_unseen the first one
    is a held-out object). Train/val/test scenes contain seen objects only."""
    counts = dict(zip(SPLITS, (*cfg.n_scenes, cfg.n_unseen_scenes), strict=True))
    rows = []
    for split in SPLITS:
        for _ in range(counts[split]):
            k = int(rng.integers(1, cfg.max_glyphs + 1))
            if split == "test_unseen":
                first = int(rng.choice(unseen))
                rest = [o for o in seen + unseen if o != first]
                objs = [first, *map(int, rng.choice(rest, k - 1, replace=False))]
            else:
                objs = [int(x) for x in rng.choice(seen, k, replace=False)]
            rows.append({"scene_id": len(rows), "split": split,
                         "seed": int(rng.integers(2**31 - 1)), "objs": objs})
    return pd.DataFrame(rows)


def image_name(scene_id: int) -> str:
    return f"images/scene_{scene_id:05d}.png"


def render_scenes(scenes: pd.DataFrame, objects: pd.DataFrame, size: int, root) -> pd.DataFrame:
    """Render every scene to ``root/images``; add boxes, labels (names) and categories."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    boxes, names, cats, objs = [], [], [], []
    for row in tqdm(scenes.itertuples(), total=len(scenes), desc="rendering scenes"):
        img, placed = render_scene(row.seed, [objects.at[o, "char"] for o in row.objs],
                                   list(row.objs), size)
        with atomic_path(root / image_name(row.scene_id)) as tmp:
            img.save(tmp, format="PNG")
        objs.append([p.obj for p in placed])
        boxes.append([list(p.box) for p in placed])
        names.append([objects.at[p.obj, "name"] for p in placed])
        cats.append([objects.at[p.obj, "category"] for p in placed])
    return scenes.assign(objs=objs, boxes=boxes, labels=names, categories=cats,
                         image_path=[image_name(s) for s in scenes["scene_id"]])


def _placements(row) -> list[Placement]:
    return [Placement(o, tuple(b), 0, False, 0.0) for o, b in zip(row.objs, row.boxes,
                                                                   strict=True)]


def make_questions(scenes: pd.DataFrame, objects: pd.DataFrame, nouns: dict[int, Synset],
                   pid_of: dict[int, int], kb_text: dict[int, str], cfg, unseen: list[int],
                   rng: np.random.Generator) -> pd.DataFrame:
    """`questions_per_scene` questions per scene, each about a different target where possible."""
    held_out = set(unseen)
    rows = []
    for row in scenes.itertuples():
        placed = _placements(row)
        cand = [i for i, o in enumerate(row.objs) if (o in held_out) == (row.split ==
                                                                           "test_unseen")]
        order = [cand[i] for i in rng.permutation(len(cand))]
        asked: set[str] = set()
        used: dict[int, set[int]] = {}  # target -> templates already asked about it
        for j in range(cfg.questions_per_scene * 2):  # extra tries for leaks / duplicates
            if len(asked) == cfg.questions_per_scene or not order:
                break
            t = order[j % len(order)]
            obj = objects.loc[row.objs[t]]
            forbidden = [*nouns[obj.synset].names, obj["name"], obj.emoji_name.replace("_", " ")]
            refs = [r for r in references(t, placed, list(row.categories), list(row.labels),
                                          cfg.image_size) if not leaks(r[1], forbidden)]
            if not refs:
                continue
            kind, ref = refs[int(rng.integers(len(refs)))]
            chosen = template_for(obj.category, rng, frozenset(used.get(t, ())))
            if chosen is None:
                continue
            k, template = chosen
            used.setdefault(t, set()).add(k)
            question = template.format(ref=ref)
            question = question[0].upper() + question[1:]
            if question in asked or leaks(question, forbidden):
                continue
            asked.add(question)
            gold = pid_of[int(obj.synset)]
            rows.append({"qid": f"s{row.scene_id:05d}q{len(asked)}", "split": row.split,
                         "scene_id": row.scene_id, "image_path": row.image_path,
                         "question": question, "caption": "", "target_obj": int(row.objs[t]),
                         "target_synset": int(obj.synset), "target_name": obj["name"],
                         "category": obj.category, "ref_kind": kind,
                         "template": f"{obj.category}/{k}",
                         "gold_pid": gold,
                         "answers": answers_from_passage(kb_text[gold], list(nouns[obj.synset]
                                                                              .names))})
    return pd.DataFrame(rows)
