"""Summaries and honesty checks of a built benchmark (notebook 01's tables, figure and `## Checks`).

`audit` counts violations of every promise DESIGN §4 makes (no target name in a question, gold
passage in every KB, answers inside the gold passage, splits disjoint by scene, unseen targets never
trained on); `rerender_mismatches` re-renders scenes from their seeds and compares pixels.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from .benchmark import Benchmark
from .okmoji import SPLITS
from .questions import leaks
from .render import render_scene


def count_tables(bench: Benchmark) -> dict[str, pd.DataFrame]:
    """Objects per category, questions per split and per reference kind, KB sizes."""
    q, obj = bench.questions, bench.objects
    objects = (obj[obj["pool"] != "unused"].groupby(["category", "pool"]).size()
               .unstack(fill_value=0).reset_index().rename_axis(columns=None))
    splits = (q.groupby("split").agg(questions=("qid", "size"), scenes=("scene_id", "nunique"),
                                     targets=("target_obj", "nunique"))
              .reindex(list(SPLITS)).reset_index())
    refs = q.groupby(["ref_kind", "split"]).size().unstack(fill_value=0).reset_index()
    refs = refs.rename_axis(columns=None)
    kbs = pd.DataFrame([{"kb": name, "passages": len(df),
                         "words": int(df["text"].str.split().str.len().sum()),
                         "mean_words": float(df["text"].str.split().str.len().mean()),
                         "sources": "+".join(sorted(df["source"].unique()))}
                        for name, df in bench.kb.items()])
    return {"objects": objects, "splits": splits, "references": refs, "kbs": kbs}


def audit(bench: Benchmark, nouns: dict) -> pd.DataFrame:
    """One row per check: the number of violating items (all must be 0) and what was checked."""
    q = bench.questions
    lemmas = {row.target_synset: list(nouns[row.target_synset].names) for row in q.itertuples()}
    rows = [("target name in question", sum(leaks(r.question, lemmas[r.target_synset] +
                                                  [r.target_name]) for r in q.itertuples()),
             len(q))]
    for name, kb in bench.kb.items():
        text = dict(zip(kb["pid"], kb["text"], strict=True))
        rows.append((f"gold passage missing from {name}",
                     int((~q["gold_pid"].isin(text)).sum()), len(q)))
        if name == next(iter(bench.kb)):
            bad = sum(not a or any(x not in text.get(g, "").lower() for x in a)
                      for g, a in zip(q["gold_pid"], q["answers"], strict=True))
            rows.append(("answer not in gold passage (or no answers)", bad, len(q)))
    rows.append(("scene in more than one split",
                 int((q.groupby("scene_id")["split"].nunique() > 1).sum()),
                 q["scene_id"].nunique()))
    train = set(q.loc[q["split"] == "train", "target_obj"])
    unseen = q[q["split"] == "test_unseen"]
    rows.append(("test_unseen target trained on", int(unseen["target_obj"].isin(train).sum()),
                 len(unseen)))
    rows.append(("duplicate question id", int(q["qid"].duplicated().sum()), len(q)))
    return pd.DataFrame(rows, columns=["check", "violations", "checked"])


def rerender_mismatches(bench: Benchmark, image_size: int, n: int, rng) -> int:
    """Re-render `n` random scenes from their seeds; count those whose pixels or boxes differ."""
    scenes = bench.scenes.set_index("scene_id")
    bad = 0
    for sid in rng.choice(scenes.index.to_numpy(), size=min(n, len(scenes)), replace=False):
        row = scenes.loc[sid]
        objs = [int(o) for o in row["objs"]]
        img, placed = render_scene(int(row["seed"]), bench.objects.loc[objs, "char"].tolist(),
                                   objs, image_size)
        same = np.array_equal(np.asarray(img), np.asarray(bench.image(int(sid))))
        bad += int(not same or [list(p.box) for p in placed] != [list(b) for b in row["boxes"]])
    return bad


def scene_grid(bench: Benchmark, scene_ids: list[int], ncols: int = 4):
    """A figure of scenes with their exact boxes, labels and one question each."""
    from matplotlib.patches import Rectangle

    from ..plots import image_grid

    fig, axes = image_grid(len(scene_ids), ncols, (3.2, 3.9))
    scenes = bench.scenes.set_index("scene_id")
    first_q = bench.questions.drop_duplicates("scene_id").set_index("scene_id")
    for ax, sid in zip(axes, scene_ids, strict=True):
        ax.imshow(bench.image(sid))
        for box, label in zip(scenes.at[sid, "boxes"], scenes.at[sid, "labels"], strict=True):
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, color="w"))
            ax.text(x0, y0, label, fontsize=6, color="k", va="bottom",
                    bbox={"facecolor": "w", "alpha": 0.8, "pad": 0.5, "lw": 0})
        q = first_q.loc[sid]
        ax.set_title(textwrap.fill(f"[{q['split']}] {q['question']}", 40) +
                     f"\n→ {q['target_name']}", fontsize=7)
    fig.tight_layout()
    return fig
