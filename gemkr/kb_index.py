"""Build (or load from cache) the corpus index of each knowledge base: notebook 03's artifact.

Cached under ``artifacts/<profile>/03_index/<kb>/``, keyed by the passage texts, the tokenizer and
the index code; the passage order of the KB table gives index passage numbers and `ids` maps them
back to KB passage ids.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from . import artifacts
from .index import FORMAT, VERSION, CorpusIndex
from .paths import artifacts_dir
from .tokenizer import encode_passages, specials


def kb_digest(kb: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for pid, text in zip(kb["pid"].tolist(), kb["text"].tolist(), strict=True):
        h.update(f"{pid}\t{text}\n".encode())
    return h.hexdigest()


def index_cache(profile: str, kb_name: str, kb: pd.DataFrame, tokenizer_name: str,
                force: bool = False, root=None) -> artifacts.StageCache:
    """Where `kb_index` caches the index of `kb`, and whether that cache is valid."""
    return artifacts.stage_cache(
        root if root is not None else artifacts_dir(profile, "03_index"),
        kb_name.replace("/", "_"),
        key_parts=(kb_digest(kb), tokenizer_name, FORMAT, VERSION), force=force,
        sources=("index.py", "shard.py", "kb_index.py", "tokenizer.py"))


def kb_index(profile: str, kb_name: str, kb: pd.DataFrame, tok, tokenizer_name: str,
             force: bool = False, root=None) -> CorpusIndex:
    """The index of `kb` (columns pid, text) tokenized with `tok`; built once, then mmapped.

    `root`: the folder holding the cache (default: the profile's ``03_index``; `gemkr.kb` puts
    a user's knowledge base under ``artifacts/<profile>/kb/<hash>/``)."""
    cache = index_cache(profile, kb_name, kb, tokenizer_name, force, root)
    if not cache.valid:
        sp = specials(tok)
        docs = encode_passages(tok, kb["text"].tolist())
        index = CorpusIndex.build(docs, eos=sp.eos, bos=sp.bos, vocab_size=sp.vocab_size,
                                  ids=kb["pid"].to_numpy())
        with cache.writing(kb=kb_name, passages=len(kb), tokens=index.num_tokens) as tmp:
            index.save(tmp)
    return CorpusIndex.load(cache.path, mmap=True)
