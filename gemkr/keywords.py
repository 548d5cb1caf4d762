"""Notebook 07: which words do clues use when the model sees text, the image, or both?

Content words are lower-cased alphabetic words of 3+ letters outside bm25s's English stopword
list. Each keyword of a clue is classified with WordNet (paper-notes: the paper's keyword
analysis contrasts object names with conceptual words):

* ``visible object`` - a word of the name of an object that is in the question's image;
* ``other physical thing`` - a noun whose most frequent sense descends from *physical entity*;
* ``abstract / conceptual`` - a noun whose most frequent sense does not;
* ``not a noun`` - no WordNet noun lemma (verbs, adjectives, function words of the gloss).
"""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from .data import wordnet

PHYSICAL_ENTITY = 1930  # WordNet 3.0 offset of physical_entity.n.01
KINDS = ("visible object", "other physical thing", "abstract / conceptual", "not a noun")
_WORD = re.compile(r"[a-z]+")


def stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


def content_words(text: str, stop: frozenset[str] | None = None) -> list[str]:
    stop = stopwords() if stop is None else stop
    return [w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in stop]


class Classifier:
    """Keyword kinds from the WordNet noun hierarchy (loaded once)."""

    def __init__(self):
        self.nouns = wordnet.load_nouns()
        self.index = wordnet.load_noun_index()
        self._physical: dict[int, bool] = {}

    def physical(self, offset: int) -> bool:
        if offset not in self._physical:
            self._physical[offset] = (offset == PHYSICAL_ENTITY or PHYSICAL_ENTITY in
                                      wordnet.hypernym_closure(self.nouns, offset))
        return self._physical[offset]

    def kind(self, word: str, visible: set[str]) -> str:
        if word in visible:
            return KINDS[0]
        senses = self.index.get(word)
        if not senses:
            return KINDS[3]
        return KINDS[1] if self.physical(senses[0]) else KINDS[2]


def keyword_table(clue_texts: pd.DataFrame, visible: dict[int, set[str]],
                  classifier: Classifier) -> pd.DataFrame:
    """One row per content word of each clue: columns of `clue_texts` (modality, qid, scene_id,
    clue) plus word and kind; `visible` maps scene ids to the words of their objects' names."""
    stop = stopwords()
    rows = []
    for r in clue_texts.itertuples():
        for w in content_words(r.clue, stop):
            rows.append({"modality": r.modality, "qid": r.qid, "word": w,
                         "kind": classifier.kind(w, visible.get(int(r.scene_id), set()))})
    return pd.DataFrame(rows, columns=["modality", "qid", "word", "kind"])


def frequencies(words: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The `top_n` most frequent keywords per modality, with their share of the modality's."""
    out = []
    for mod, g in words.groupby("modality", sort=False):
        counts = Counter(g["word"])
        total = sum(counts.values())
        out += [{"modality": mod, "word": w, "count": c, "share": c / total}
                for w, c in counts.most_common(top_n)]
    return pd.DataFrame(out)


def overlap(words: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Jaccard overlap of the modalities' keyword vocabularies (all, and top-N) per pair."""
    mods = list(dict.fromkeys(words["modality"]))
    sets = {m: set(words.loc[words.modality == m, "word"]) for m in mods}
    top = {m: set(frequencies(words[words.modality == m], top_n)["word"]) for m in mods}
    rows = []
    for i, a in enumerate(mods):
        for b in mods[i + 1:]:
            rows.append({"pair": f"{a} vs {b}",
                         "jaccard_all": len(sets[a] & sets[b]) / max(len(sets[a] | sets[b]), 1),
                         f"jaccard_top{top_n}": len(top[a] & top[b]) / max(len(top[a] | top[b]),
                                                                             1)})
    return pd.DataFrame(rows)
