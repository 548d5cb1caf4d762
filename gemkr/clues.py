"""Knowledge-clue targets (DESIGN §5): spans of the gold passage's *index token ids*.

The default rule follows the paper's text: the shortest span from the passage start that occurs
in exactly one passage, at least `min_tokens` long, capped at `max_tokens` (paper-notes §9: the
official code has no clue builder; this is the kit's stated choice). Targets are slices of the ids
stored in the index, never re-tokenized text (trap T6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .index import CorpusIndex


@dataclass(frozen=True)
class ClueTarget:
    tokens: tuple[int, ...]
    unique: bool  # False when even the capped span occurs in several passages
    count: int  # occurrences of the span in the corpus
    n_docs: int


def target_clue(index: CorpusIndex, passage: np.ndarray, max_tokens: int = 9,
                min_tokens: int = 1, anchor_bos: bool = False) -> ClueTarget:
    """The shortest unique span from the start of `passage` (its tokens without BOS / EOS).

    With `anchor_bos`, uniqueness is judged for BOS + span (clues anchored at a passage start).
    """
    st = index.state([index.bos]) if anchor_bos else index.root()
    toks: list[int] = []
    for t in list(passage[:max_tokens]):
        st = index.extend(st, int(t))
        toks.append(int(t))
        if len(toks) >= min_tokens and index.is_unique(st):
            return ClueTarget(tuple(toks), True, st.count, 1)
    return ClueTarget(tuple(toks), False, st.count, len(index.state_docs(st)))


def clue_walk(index: CorpusIndex, tokens: list[int], anchor_bos: bool = False) -> list[dict]:
    """Step through a clue: after each token, how many next tokens are allowed and how many
    occurrences / passages remain (notebook 03's figure)."""
    st = index.state([index.bos]) if anchor_bos else index.root()
    rows = [{"step": 0, "token": None, "allowed": int(index.allowed(st).size),
             "occurrences": st.count, "passages": index.num_docs}]
    for i, t in enumerate(tokens, 1):
        st = index.extend(st, int(t))
        rows.append({"step": i, "token": int(t), "allowed": int(index.allowed(st).size),
                     "occurrences": st.count, "passages": int(len(index.state_docs(st)))})
    return rows


def target_gallery(index: CorpusIndex, pids, tok, max_tokens: int = 9, min_tokens: int = 1,
                   opening_tokens: int = 12):
    """One row per passage id in `pids`: its opening, its clue target (shortest unique span from
    the start, capped at `max_tokens`), the target's length, whether it is unique and how many
    passages contain it (notebook 03's section on clue targets)."""
    import pandas as pd

    rows = []
    for pid in pids:
        passage = index.passage_tokens(index.number_of(pid))
        t = target_clue(index, passage, max_tokens, min_tokens)
        rows.append({"pid": pid, "passage opening": tok.decode(passage[:opening_tokens].tolist()),
                     "clue target": tok.decode(list(t.tokens)), "tokens": len(t.tokens),
                     "unique": t.unique, "passages": t.n_docs})
    return pd.DataFrame(rows)
