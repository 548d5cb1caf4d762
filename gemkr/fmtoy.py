"""A textbook FM-index on a toy corpus, for teaching only (notebook 03).

It shows that the interval an FM-index's *backward search* finds for a pattern is exactly the
suffix-array interval `gemkr.index` uses: both are the suffixes that start with the pattern.
The C and Occ tables are built in full and backward search is recorded step by step, so a
learner can follow the interval narrowing. Quadratic and pure Python on purpose; never used for
real corpora.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

SENTINEL = -1  # ends a toy stream: smaller than every token id, so rotations sort like suffixes


def stream(docs: Sequence[Sequence[int]], sep: int) -> list[int]:
    """Passages joined into one token stream, each followed by `sep`, ended by `SENTINEL`."""
    out: list[int] = []
    for d in docs:
        out += [*map(int, d), int(sep)]
    return [*out, SENTINEL]


def suffix_array(text: list[int]) -> list[int]:
    """Suffixes sorted lexicographically (a shorter prefix sorts first)."""
    return sorted(range(len(text)), key=lambda i: text[i:])


def bwt(text: list[int], sa: list[int]) -> list[int]:
    """Burrows-Wheeler transform: the token before each sorted suffix (text assumed to end with a
    unique smallest sentinel, so rotations sort like suffixes)."""
    return [text[i - 1] for i in sa]


def c_table(text: list[int]) -> dict[int, int]:
    """C[a]: how many tokens of the text are smaller than a (where a's suffixes start in the
    suffix array)."""
    return {a: sum(t < a for t in text) for a in sorted(set(text))}


def occ_table(text: list[int]) -> pd.DataFrame:
    """Occ(a, i): occurrences of token a in BWT[:i], for i = 0..n (rows) and every token a."""
    last = bwt(text, suffix_array(text))
    rows = [{a: sum(t == a for t in last[:i]) for a in sorted(set(text))}
            for i in range(len(text) + 1)]
    return pd.DataFrame(rows).rename_axis("i")


def backward_steps(text: list[int], pattern: list[int]) -> list[dict]:
    """Backward search, one row per pattern token read right to left: the token, C[a],
    Occ(a, lo), Occ(a, hi) and the new interval [lo, hi) (empty: the pattern does not occur)."""
    c, occ = c_table(text), occ_table(text)
    lo, hi = 0, len(text)
    rows = [{"step": 0, "token": None, "C[a]": None, "Occ(a, lo)": None, "Occ(a, hi)": None,
             "lo": lo, "hi": hi}]
    for step, a in enumerate(reversed(pattern), 1):
        if a not in c:
            lo = hi = 0
            rows.append({"step": step, "token": a, "C[a]": None, "Occ(a, lo)": None,
                         "Occ(a, hi)": None, "lo": lo, "hi": hi})
            break
        o_lo, o_hi = int(occ.at[lo, a]), int(occ.at[hi, a])
        lo, hi = c[a] + o_lo, c[a] + o_hi
        rows.append({"step": step, "token": a, "C[a]": c[a], "Occ(a, lo)": o_lo,
                     "Occ(a, hi)": o_hi, "lo": lo, "hi": hi})
        if lo >= hi:
            break
    return rows


def backward_search(text: list[int], pattern: list[int]) -> tuple[int, int]:
    """FM-index interval [lo, hi) of `pattern`, read right to left with C[] and Occ();
    (0, 0) when it does not occur."""
    last = backward_steps(text, pattern)[-1]
    return (last["lo"], last["hi"]) if last["lo"] < last["hi"] else (0, 0)


def passages_of(text: list[int], sep: int, lo: int, hi: int) -> list[int]:
    """Passage numbers (0-based order of `stream`) of the suffixes in [lo, hi)."""
    sa = suffix_array(text)
    return sorted({text[:sa[r]].count(sep) for r in range(lo, hi)})
