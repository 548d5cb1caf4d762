"""OK-VQA-style questions: point at the target only visually, ask what the picture cannot show.

A question is a *reference* ("the animal on the left", "the biggest object", "the thing above the
bicycle") plus a *knowledge template* per category ("What is {ref} used for?"). The target's name or
any of its lemmas never appears (`leaks` checks it); other objects may be named, as in the paper's
"the thing above the car". Answers are strings of the gold passage, as OK-VQA answers are found in
retrieved passages: the target's lemmas and the first content words of its gloss.
"""

from __future__ import annotations

import re

import numpy as np

from .objects import CATEGORY_NOUN
from .render import Placement

# Knowledge the picture does not show; {ref} is the visual reference.
TEMPLATES = {
    "animal": ["What kind of creature is {ref}, and what is it known for?",
               "Which group of animals does {ref} belong to?",
               "Where does {ref} usually live?", "What does {ref} typically eat?"],
    "plant": ["What family does {ref} belong to?", "Where does {ref} naturally grow?",
              "What is {ref} cultivated for?"],
    "food": ["What is {ref} made of?", "How is {ref} usually prepared?",
             "What kind of food is {ref}?"],
    "vehicle": ["What is {ref} used for?", "How is {ref} powered?",
                "What kind of vehicle is {ref}?"],
    "building": ["What is {ref} used for?", "Who uses {ref}, and for what?",
                 "What kind of structure is {ref}?"],
}
_GENERIC = ["What is {ref} used for?", "What is {ref} made of?", "What do people do with {ref}?"]

STOPWORDS = frozenset("""a an the and or of to in on for with by from as at that this which who
whom whose is are was were be been being it its their them they usually often especially various
any some several many numerous one two used use having has have into out up very more most other
such than also can may made make like consisting large small short long little great
known common commonly typically generally playing something someone resembling similar""".split())


def template_for(category: str, rng: np.random.Generator,
                 exclude: frozenset[int] = frozenset()) -> tuple[int, str] | None:
    """A random knowledge template of the category (index, text), avoiding `exclude`."""
    options = TEMPLATES.get(category, _GENERIC)
    free = [k for k in range(len(options)) if k not in exclude]
    if not free:
        return None
    k = free[int(rng.integers(len(free)))]
    return k, options[k]


def _center(b: tuple[int, ...]) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _area(b: tuple[int, ...]) -> int:
    return (b[2] - b[0]) * (b[3] - b[1])


def references(t: int, placed: list[Placement], categories: list[str], names: list[str],
               size: int) -> list[tuple[str, str]]:
    """Every unambiguous visual reference to placement `t`: (kind, phrase)."""
    noun = CATEGORY_NOUN[categories[t]]
    if len(placed) == 1:
        return [("single", f"this {noun}"), ("single", "this"), ("single", "the object shown")]
    margin = 0.12 * size
    cx = [_center(p.box)[0] for p in placed]
    cy = [_center(p.box)[1] for p in placed]
    others = [i for i in range(len(placed)) if i != t]
    out = []
    for kind, values, sign, phrase in (("left", cx, -1, "on the left"), ("right", cx, 1,
                                       "on the right"), ("top", cy, -1, "at the top"),
                                       ("bottom", cy, 1, "at the bottom")):
        if all(sign * (values[t] - values[o]) > margin for o in others):
            out.append((kind, f"the {noun} {phrase}" if kind in ("left", "right")
                        else f"the object {phrase}"))
    areas = [_area(p.box) for p in placed]
    if all(areas[t] > 1.4 * areas[o] for o in others):
        out.append(("biggest", "the biggest object"))
    if all(areas[t] * 1.4 < areas[o] for o in others):
        out.append(("smallest", "the smallest object"))
    if sum(c == categories[t] for c in categories) == 1:
        out.append(("category", f"the {noun} in the picture"))
    for o in others:  # "the thing above the car": directly above exactly one other object
        bt, bo = placed[t].box, placed[o].box
        overlap_x = min(bt[2], bo[2]) - max(bt[0], bo[0])
        above_o = [i for i in range(len(placed)) if i != o and placed[i].box[3] <= bo[1] + 2
                   and min(placed[i].box[2], bo[2]) - max(placed[i].box[0], bo[0]) > 0]
        if bt[3] <= bo[1] + 2 and overlap_x > 0 and above_o == [t]:
            out.append(("above", f"the thing above the {names[o]}"))
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*", text.lower())


def leaks(question: str, forbidden: list[str]) -> bool:
    """True when any forbidden name occurs in the question as whole word(s), case-insensitive."""
    q = " " + " ".join(_words(question)) + " "
    return any(f" {' '.join(_words(f))} " in q for f in forbidden if _words(f))


def answers_from_passage(passage: str, lemmas: list[str], n_keywords: int = 3) -> list[str]:
    """OK-VQA-style answer strings, each a substring of `passage` (checked)."""
    gloss = passage.split(":", 1)[1] if ":" in passage else passage
    keywords = [w for w in _words(gloss) if len(w) >= 4 and w not in STOPWORDS]
    out = list(dict.fromkeys([*(x.lower() for x in lemmas), *keywords[:n_keywords]]))
    low = passage.lower()
    return [a for a in out if a in low]
