"""Notebook 08's case-study figure: image with detected boxes, question, top clues with their
corpus counts, and the retrieved passages marked right or wrong."""

from __future__ import annotations

import textwrap

import pandas as pd

from .tokenizer import clue_text


def gold_ranks(questions: pd.DataFrame, ranked: list[list[int]]) -> list[int | None]:
    """1-based rank of each question's gold passage in its retrieval (None: not retrieved)."""
    return [r.index(g) + 1 if g in r else None
            for g, r in zip(questions.gold_pid.tolist(), ranked, strict=True)]


def pick_cases(questions: pd.DataFrame, ranked: list[list[int]], n: int,
               top: int = 5) -> pd.DataFrame:
    """About half successes (the gold passage among the first `top` retrieved, best rank first)
    and half failures (gold not among them), in question order; fills up from the other kind
    when one is short. Success is "in the top `top`" rather than "first" because the figure
    shows that many passages, and a CPU-profile model rarely puts the gold passage first."""
    q = questions.assign(gold_rank=gold_ranks(questions, ranked), position=range(len(questions)))
    hit = q.gold_rank.notna() & (q.gold_rank <= top)
    good = q[hit].sort_values("gold_rank", kind="stable")
    k = min(len(good), n // 2)
    take = pd.concat([good.head(k), q[~hit].head(n - k)])
    if len(take) < n:
        take = pd.concat([take, q.drop(index=take.index).head(n - len(take))])
    outcome = (take.gold_rank.notna() & (take.gold_rank <= top)).map(
        {True: "success", False: "failure"})
    return take.assign(outcome=outcome)


def case_figure(cases: pd.DataFrame, clues: list, ranked: list[list[int]], bench, dets,
                kb_text: dict[int, str], tok, n_clues: int = 3, n_passages: int = 5):
    """One row per case: the image with detected boxes (left) and the text panel (right)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(len(cases), 2, figsize=(11, 2.9 * len(cases)),
                             gridspec_kw={"width_ratios": [1, 3.2]}, squeeze=False)
    for (ax_img, ax_txt), case in zip(axes, cases.itertuples(), strict=True):
        ax_img.imshow(bench.image(case.scene_id))
        for d in dets[dets.scene_id == case.scene_id].itertuples():
            ax_img.add_patch(Rectangle((d.x0, d.y0), d.x1 - d.x0, d.y1 - d.y0, fill=False,
                                       lw=1.2, color="tab:orange"))
            ax_img.text(d.x0, d.y0, d.label, fontsize=6, va="bottom", color="k",
                        bbox={"facecolor": "tab:orange", "alpha": 0.7, "pad": 0.2, "lw": 0})
        ax_img.set_axis_off()
        where = "not retrieved" if pd.isna(case.gold_rank) else f"gold #{int(case.gold_rank)}"
        lines = [f"[{case.outcome}, {where}] Q: {case.text}", f"answer object: {case.target_name}",
                 "clues (count in KB): " + " | ".join(
                     f"{clue_text(tok, c.tokens)!r} ({c.count})"
                     for c in clues[case.position][:n_clues])]
        for pid in ranked[case.position][:n_passages]:
            mark = "✓" if pid == case.gold_pid else "✗"
            lines.append(f"{mark} {textwrap.shorten(kb_text[pid], 95)}")
        ax_txt.text(0, 1, "\n".join(lines), va="top", fontsize=7.5, family="DejaVu Sans")
        ax_txt.set_axis_off()
    fig.tight_layout()
    return fig
