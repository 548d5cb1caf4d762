"""Notebook 04's stage table: one row per trained stage (what it trained, for how long, and the
measure it moved), from the run records the stages return."""

from __future__ import annotations

import pandas as pd

from . import probe


def _row(stage: str, info: dict, measure: str, before, after, precision=None) -> dict:
    history = info.get("history") or [None]
    return {"stage": stage, "precision": info.get("precision", precision),
            "seconds": info.get("seconds", 0.0), "steps": len(info.get("history") or []),
            "processes": info.get("processes", 1),
            "first_loss": history[0], "last_loss": history[-1], "measure": measure,
            "before": before, "after": after}


def stage_table(vision: dict, llm: dict, align: dict, gemkr: dict, reading,
                val_hit: list[bool]) -> pd.DataFrame:
    """``04_stages.csv``: vision tower, LLM stage 2, the alignment stage (when it ran) and GeMKR
    instruction tuning, each with its measure before and after."""
    rows = [_row("1 vision pretraining", vision, "zero-shot naming accuracy (test crops)",
                 vision["zero_shot_before"], vision["zero_shot_after"]),
            _row("2 LLM reading + knowledge", llm, "object_named (reading probe)",
                 probe.share(reading, "LLM before stage 2"),
                 probe.share(reading, "LLM entering GeMKR tuning"), precision="(pretrained)")]
    if align:
        rows.append(_row("3a alignment", align,
                         f"image_names_object ({align.get('naming_objects', 0)} test objects)",
                         align.get("naming_before"), align.get("naming_after")))
    rows.append(_row("3 GeMKR instruction tuning", gemkr,
                     f"gold passage first ({len(val_hit)} val questions)", None,
                     sum(val_hit) / max(len(val_hit), 1)))
    return pd.DataFrame(rows)
