"""A textbook FM-index on a toy corpus, for teaching only (notebook 03).

It shows that the interval an FM-index's *backward search* finds for a pattern is exactly the
suffix-array interval `gemkr.index` uses: both are the suffixes that start with the pattern.
Quadratic and pure Python on purpose; never used for real corpora.
"""

from __future__ import annotations


def suffix_array(text: list[int]) -> list[int]:
    """Suffixes sorted lexicographically (a shorter prefix sorts first)."""
    return sorted(range(len(text)), key=lambda i: text[i:])


def bwt(text: list[int], sa: list[int]) -> list[int]:
    """Burrows-Wheeler transform: the token before each sorted suffix (text assumed to end with a
    unique smallest sentinel, so rotations sort like suffixes)."""
    return [text[i - 1] for i in sa]


def backward_search(text: list[int], pattern: list[int]) -> tuple[int, int]:
    """FM-index interval [lo, hi) of `pattern`, read right to left with C[] and Occ()."""
    sa = suffix_array(text)
    last = bwt(text, sa)
    alphabet = sorted(set(text))
    c = {a: sum(t < a for t in text) for a in alphabet}  # tokens smaller than a

    def occ(a: int, i: int) -> int:  # occurrences of a in last[:i]
        return sum(t == a for t in last[:i])

    lo, hi = 0, len(text)
    for a in reversed(pattern):
        if a not in c:
            return (0, 0)
        lo, hi = c[a] + occ(a, lo), c[a] + occ(a, hi)
        if lo >= hi:
            return (0, 0)
    return (lo, hi)
