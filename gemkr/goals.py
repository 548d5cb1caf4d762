"""The kit's goals for a profile, computed from its result tables (``results/<profile>/goals.csv``).

A goal is a research target (GeMKR ahead of the baselines, an image that matters), not an
invariant: a healthy run on another processor may miss one by noise. So notebooks *report*
goals and never fail on them; `run_all.sh` writes ``goals.csv`` after every run (goal, value,
target, interval, met), and the test suite asserts the goals on the committed `default` results
(``tests/test_goals.py``). A goal whose table has not been written yet is left out.

Each goal reads one committed table, so a number quoted in the README can be traced to its row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .paths import results_dir

MAIN_KB = "KB-L"  # the largest knowledge base of the built-in benchmark
CLIP_CROPS = "CLIP (detected crops)"
MINILM = "MiniLM (question + caption)"
ORACLE = "oracle (object name, BM25)"


@dataclass(frozen=True)
class Goal:
    name: str
    source: str  # the table (file name) the value comes from
    target: str  # the rule, in words
    compute: Callable[[Path], tuple[float, float | None, float | None, bool]]  # value, lo, hi, met


def _main(root: Path, relevance: str = "gold_id") -> pd.DataFrame:
    df = pd.read_csv(root / "05_main_results.csv")
    kb = MAIN_KB if MAIN_KB in set(df.kb) else df.kb.iloc[-1]
    return df[(df.split == "test") & (df.relevance == relevance) & (df.kb == kb)].set_index(
        "method")


def _ablation(root: Path, variant: str, metric: str = "R@5") -> float:
    df = pd.read_csv(root / "06_ablations.csv")
    return float(df[(df.relevance == "gold_id") & (df.variant == variant)][metric].iloc[0])


def _r5_at_least(threshold: float):
    def compute(root):
        v = float(_main(root).at["GeMKR", "R@5"])
        return v, None, None, v >= threshold
    return compute


def _ratio_minilm(root):
    m = _main(root)
    v = float(m.at["GeMKR", "R@5"] / max(m.at[MINILM, "R@5"], 1e-9))
    return v, None, None, v >= 1.5


def _r1_over_minilm(root):
    m = _main(root)
    v = float(m.at["GeMKR", "R@1"] - m.at[MINILM, "R@1"])
    return v, None, None, v > 0


def _ahead_of_all(root):
    """The smallest paired R@5 difference GeMKR - method over every non-oracle method."""
    df = pd.read_csv(root / "05_paired.csv")
    worst = df.sort_values("ci95_low").iloc[0]
    return (float(worst["ΔR@5"]), float(worst["ci95_low"]), float(worst["ci95_high"]),
            bool((df["ci95_low"] > 0).all()))


def _answer_vs_minilm(root):
    m = _main(root, "answer")
    v = float(m.at["GeMKR", "R@5"] - m.at[MINILM, "R@5"])
    return v, None, None, v >= 0


def _image_only(root):
    v = _ablation(root, "image only")
    return v, None, None, v >= 0.25


def _image_adds(root):
    iv = pd.read_csv(root / "06_ablation_intervals.csv").set_index("variant")
    row = iv.loc["caption instead of image"]
    # the table holds variant - full; the goal is full - variant
    d, lo, hi = -float(row["ΔR@5 vs full model"]), -float(row["ci95_high"]), -float(
        row["ci95_low"])
    return d, lo, hi, d >= 0.05 and lo > 0


def _caption_misses(root):
    df = pd.read_csv(root / "05_by_caption.csv")
    v = float(df[(df.method == "GeMKR") & ~df.caption_names_gold]["R@5"].iloc[0])
    return v, None, None, v >= 0.20


def _question_picks(root):
    """The smallest R@1 difference GeMKR - CLIP-crops over the kinds of reference with at least
    30 test questions, with that kind's paired 95 % interval where the table has one (met: every
    such difference >= 0, as the goal reads)."""
    df = pd.read_csv(root / "05_by_ref_kind.csv")
    df = df[(df.ref_kind != "all") & (df.n_queries >= 30)]
    piv = df.pivot_table(index="ref_kind", columns="method", values="R@1")
    if piv.empty or "GeMKR" not in piv or CLIP_CROPS not in piv:
        return float("nan"), None, None, False
    diff = piv["GeMKR"] - piv[CLIP_CROPS]
    lo = hi = None
    if {"against", "ci95_low", "ci95_high"} <= set(df) and (df["against"] == CLIP_CROPS).any():
        worst = df[(df.method == "GeMKR") & (df.ref_kind == diff.idxmin())].iloc[0]
        lo, hi = float(worst["ci95_low"]), float(worst["ci95_high"])
    return float(diff.min()), lo, hi, bool((diff >= 0).all())


def _asks_about(root):
    df = pd.read_csv(root / "09_asks_about.csv")
    return float(df["names_it"].mean()), None, None, bool(df["names_it"].all())


def _map50(root):
    df = pd.read_csv(root / "02_map.csv")
    v = float(df[df.category == "all"]["map50"].iloc[0])
    return v, None, None, v >= 0.8


def _probe(root):
    df = pd.read_csv(root / "04_reading_probe.csv")
    v = float(df[(df.model == "LLM entering GeMKR tuning") & (df.probe == "object_named")]
              ["share"].iloc[0])
    return v, None, None, v >= 0.6


def _runtime(root):
    m = json.loads((root / "manifest.json").read_text())
    minutes = sum(r.get("wall_s", 0.0) for r in m["notebooks"].values()) / 60
    return minutes, None, None, bool(m.get("one_cold_run")) and minutes <= 60


GOALS = (
    Goal("GeMKR R@5 >= 0.30", "05_main_results.csv", "test / KB-L, gold passage",
         _r5_at_least(0.30)),
    Goal("GeMKR R@5 >= 1.5x MiniLM (question + caption)", "05_main_results.csv",
         "ratio of R@5, test / KB-L, gold passage", _ratio_minilm),
    Goal("GeMKR R@1 > MiniLM (question + caption)", "05_main_results.csv",
         "difference of R@1 > 0, test / KB-L, gold passage", _r1_over_minilm),
    Goal("GeMKR R@5 >= 0.50", "05_main_results.csv", "test / KB-L, gold passage",
         _r5_at_least(0.50)),
    Goal("GeMKR ahead of every non-oracle method", "05_paired.csv",
         "smallest paired ΔR@5 (GeMKR - method), 95 % interval above 0 for every method",
         _ahead_of_all),
    Goal("answer relevance: GeMKR R@5 >= MiniLM (question + caption)", "05_main_results.csv",
         "difference of R@5 >= 0, test / KB-L, answer relevance", _answer_vs_minilm),
    Goal("image only R@5 >= 0.25", "06_ablations.csv",
         "question + visual tokens, no caption; ablation schedule", _image_only),
    Goal("the image adds to the caption", "06_ablation_intervals.csv",
         "full model - 'caption instead of image': ΔR@5 >= 0.05, paired 95 % interval above 0",
         _image_adds),
    Goal("caption misses the gold object: GeMKR R@5 >= 0.20", "05_by_caption.csv",
         "test / KB-L, questions whose caption does not name the gold object", _caption_misses),
    Goal("the question picks the object: R@1 >= CLIP-crops per kind", "05_by_ref_kind.csv",
         "smallest R@1 difference over kinds of reference with >= 30 test questions",
         _question_picks),
    Goal("09: the first passage is the object the question asks about",
         "09_asks_about.csv", "share of 09's three questions that point at one object; all",
         _asks_about),
    Goal("YOLO test mAP50 >= 0.8", "02_map.csv", "all classes", _map50),
    Goal("reading probe >= 0.6 entering tuning", "04_reading_probe.csv",
         "object_named of the LLM entering GeMKR tuning", _probe),
    Goal("one cold run <= 60 min", "manifest.json",
         "sum of the notebooks' wall times, every row from one cold run", _runtime),
)


def evaluate(profile: str, root: Path | None = None) -> pd.DataFrame:
    """One row per goal whose table exists: goal, source, target, value, ci95_low, ci95_high,
    met."""
    root = results_dir(profile) if root is None else Path(root)
    rows = []
    for g in GOALS:
        if not (root / g.source).exists():
            continue
        value, lo, hi, met = g.compute(root)
        rows.append({"goal": g.name, "source": g.source, "target": g.target, "value": value,
                     "ci95_low": lo, "ci95_high": hi, "met": bool(met)})
    return pd.DataFrame(rows, columns=["goal", "source", "target", "value", "ci95_low",
                                       "ci95_high", "met"])


def save(profile: str) -> Path:
    """Write ``results/<profile>/goals.csv`` from the profile's current tables."""
    from .artifacts import write_csv

    return write_csv(evaluate(profile), results_dir(profile) / "goals.csv")
