"""The kit's goals (gemkr/goals.py): computed right from small tables, written by run_all.sh, and
asserted on the committed `default` results. A goal the committed run misses is an expected
failure (strict: the day it is met, the test says so and the list below must change)."""

import json

import pandas as pd
import pytest

from gemkr import goals
from gemkr.paths import REPO_ROOT

COMMITTED = REPO_ROOT / "results" / "default"

# Goals the committed cold `default` run misses (README, "Goals"): reported, not hidden.
MISSED_IN_COMMITTED_RUN: dict[str, str] = {
    '09: the first passage is the object the question asks about':
        'committed run: 0.667',
    'one cold run <= 60 min':
        'committed run: 85.777',
}


def write_tables(root, gemkr_r5=0.55, caption_miss_r5=0.3, image_only=0.3):
    rows = []
    for method, r1, r5 in (("GeMKR", 0.4, gemkr_r5), (goals.MINILM, 0.2, 0.3),
                           (goals.CLIP_CROPS, 0.3, 0.4), (goals.ORACLE, 0.9, 0.95)):
        for rel in ("gold_id", "answer"):
            rows.append({"kb": "KB-L", "split": "test", "method": method, "relevance": rel,
                         "R@1": r1, "R@5": r5})
    pd.DataFrame(rows).to_csv(root / "05_main_results.csv", index=False)
    pd.DataFrame({"method": ["GeMKR", "GeMKR"], "caption_names_gold": [True, False],
                  "n_queries": [80, 20], "R@1": [0.5, 0.1], "R@5": [0.6, caption_miss_r5]}
                 ).to_csv(root / "05_by_caption.csv", index=False)
    pd.DataFrame({"method": [goals.MINILM, goals.CLIP_CROPS], "ΔR@5": [0.25, 0.15],
                  "ci95_low": [0.2, 0.05], "ci95_high": [0.3, 0.25]}
                 ).to_csv(root / "05_paired.csv", index=False)
    pd.DataFrame({"method": ["GeMKR", goals.CLIP_CROPS] * 3,
                  "ref_kind": ["left", "left", "single", "single", "top", "top"],
                  "n_queries": [40, 40, 100, 100, 10, 10],
                  "R@1": [0.3, 0.25, 0.5, 0.5, 0.0, 0.9]}).to_csv(root / "05_by_ref_kind.csv",
                                                                  index=False)
    pd.DataFrame({"variant": ["full model", "image only"], "relevance": ["gold_id"] * 2,
                  "R@5": [0.5, image_only]}).to_csv(root / "06_ablations.csv", index=False)
    pd.DataFrame({"variant": ["caption instead of image"], "ΔR@5 vs full model": [-0.1],
                  "ci95_low": [-0.15], "ci95_high": [-0.04]}
                 ).to_csv(root / "06_ablation_intervals.csv", index=False)


def test_goals_from_small_tables(tmp_path):
    write_tables(tmp_path)
    t = goals.evaluate("default", tmp_path).set_index("goal")
    assert t.at["GeMKR R@5 >= 0.50", "met"] and t.at["GeMKR R@5 >= 0.50", "value"] == 0.55
    assert t.at["GeMKR R@5 >= 1.5x MiniLM (question + caption)", "value"] == pytest.approx(
        0.55 / 0.3)
    ahead = t.loc["GeMKR ahead of every non-oracle method"]
    assert ahead.met and ahead.value == 0.15 and ahead.ci95_low == 0.05
    adds = t.loc["the image adds to the caption"]
    assert adds.met and adds.value == pytest.approx(0.1) and adds.ci95_low == pytest.approx(0.04)
    # the "top" kind has too few questions to count; "single" ties, "left" is ahead
    picks = t.loc["the question picks the object: R@1 >= CLIP-crops per kind"]
    assert picks.met and picks.value == pytest.approx(0.0)
    assert pd.isna(picks.ci95_low), "a table without paired columns gives no interval"
    assert "YOLO test mAP50 >= 0.8" not in t.index, "a goal without its table is left out"


def test_question_picks_reports_the_worst_kinds_interval(tmp_path):
    write_tables(tmp_path)
    kinds = pd.read_csv(tmp_path / "05_by_ref_kind.csv").assign(against=goals.CLIP_CROPS)
    kinds["ci95_low"] = [0.0, None, -0.1, None, -0.5, None]
    kinds["ci95_high"] = [0.1, None, 0.1, None, 0.2, None]
    kinds.to_csv(tmp_path / "05_by_ref_kind.csv", index=False)
    picks = goals.evaluate("default", tmp_path).set_index("goal").loc[
        "the question picks the object: R@1 >= CLIP-crops per kind"]
    # "single" (0.0) is the worst of the kinds with >= 30 questions ("top" has 10)
    assert picks.value == pytest.approx(0.0) and picks.ci95_low == pytest.approx(-0.1)
    assert picks.ci95_high == pytest.approx(0.1)


@pytest.mark.parametrize(("kw", "goal"), [
    ({"gemkr_r5": 0.45}, "GeMKR R@5 >= 0.50"),
    ({"caption_miss_r5": 0.1}, "caption misses the gold object: GeMKR R@5 >= 0.20"),
    ({"image_only": 0.2}, "image only R@5 >= 0.25")])
def test_a_missed_goal_is_reported_as_missed(tmp_path, kw, goal):
    write_tables(tmp_path, **kw)
    assert not goals.evaluate("default", tmp_path).set_index("goal").at[goal, "met"]


def committed_table():
    if not (COMMITTED / "goals.csv").exists():
        pytest.fail("results/default/goals.csv is missing: run ./run_all.sh and commit it")
    return pd.read_csv(COMMITTED / "goals.csv")


def test_committed_goals_csv_is_what_the_tables_say():
    saved = committed_table().set_index("goal")
    now = goals.evaluate("default", COMMITTED).set_index("goal")
    assert list(saved.index) == list(now.index) == [g.name for g in goals.GOALS]
    pd.testing.assert_series_equal(saved["met"], now["met"])
    pd.testing.assert_series_equal(saved["value"], now["value"], atol=1e-6, check_exact=False)


def test_committed_run_is_one_cold_run():
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    assert manifest["one_cold_run"], "the committed default results come from one cold run"


@pytest.mark.parametrize("name", [
    pytest.param(g.name, marks=pytest.mark.xfail(strict=True, reason=MISSED_IN_COMMITTED_RUN[
        g.name])) if g.name in MISSED_IN_COMMITTED_RUN else g.name for g in goals.GOALS])
def test_goal_on_committed_default_results(name):
    row = committed_table().set_index("goal").loc[name]
    assert row["met"], f"{name}: {row['value']:.3f} ({row['target']})"
