"""Build (or load from cache) the corpus index of each knowledge base: notebook 03's artifact.

Cached under ``artifacts/<profile>/03_index/<kb>/``, keyed by the passage texts, the tokenizer and
the index code; the passage order of the KB table gives index passage numbers and `ids` maps them
back to KB passage ids.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from . import artifacts
from .index import FORMAT, VERSION, CorpusIndex
from .paths import artifacts_dir
from .tokenizer import encode_passages, specials


def kb_digest(kb) -> str:
    """What a KB holds, as a key: a hash of a table's (pid, text) rows; a `PassageFile`'s key
    (its file's sha256 and how it was read)."""
    from .passage_file import PassageFile

    if isinstance(kb, PassageFile):
        return kb.key
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
    a user's knowledge base under ``artifacts/<profile>/kb/<hash>/``). A KB left in its file
    (`passage_file.PassageFile`) is indexed as the file streams (`streamed_index`)."""
    from .passage_file import PassageFile

    if isinstance(kb, PassageFile):
        return streamed_index(profile, kb_name, kb, tok, tokenizer_name, force=force, root=root)
    cache = index_cache(profile, kb_name, kb, tokenizer_name, force, root)
    if not cache.valid:
        sp = specials(tok)
        docs = encode_passages(tok, kb["text"].tolist())
        index = CorpusIndex.build(docs, eos=sp.eos, bos=sp.bos, vocab_size=sp.vocab_size,
                                  ids=kb["pid"].to_numpy())
        with cache.writing(kb=kb_name, passages=len(kb), tokens=index.num_tokens) as tmp:
            index.save(tmp)
    return CorpusIndex.load(cache.path, mmap=True)


# the most stored tokens one shard of a streamed build holds: one int32 suffix sort of a 16-bit
# stream (`shard.suffix_array` sorts its bytes), as `python -m gemkr bench-index` measures it
STREAM_SHARD_TOKENS = (2**31 - 1) // 2


def streamed_index(profile: str, kb_name: str, kb, tok, tokenizer_name: str, *,
                   force: bool = False, root=None, chunk: int = 4096,
                   shard_tokens: int = STREAM_SHARD_TOKENS) -> CorpusIndex:
    """The index of a knowledge base left in its file (`passage_file.PassageFile`: DPR's
    ``psgs_w100.tsv``, WK21M, 21M passages), built as the file streams: passages are read,
    tokenized and indexed `chunk` at a time (`CorpusIndex.build_streamed`: one shard in memory
    at a time), never the whole file.

    The passages are the file's without exact duplicates (`PassageFile.scan` drops them as
    `deduplicate` drops them from a table); their count is stored in ``streamed.json``. Cached
    under ``03_index/<kb_name>/``, keyed by the file's content, the tokenizer and the index code;
    then memory-mapped."""
    cache = artifacts.stage_cache(
        root if root is not None else artifacts_dir(profile, "03_index"),
        kb_name.replace("/", "_"),
        key_parts=(kb.key, tokenizer_name, FORMAT, VERSION, shard_tokens), force=force,
        sources=("index.py", "shard.py", "kb_index.py", "tokenizer.py", "passage_file.py",
                 "data/loaders.py"))
    if not cache.valid:
        sp = specials(tok)

        def passages():
            for _, texts in kb.rows(chunk):
                yield from encode_passages(tok, texts, progress=False)

        with cache.writing(kb=kb_name, source=str(kb.path)) as tmp:
            CorpusIndex.build_streamed(tmp, passages(), eos=sp.eos, bos=sp.bos,
                                       vocab_size=sp.vocab_size, shard_tokens=shard_tokens,
                                       ids=(int(p) for p in kb.pids))
            header = json.loads((tmp / "index.json").read_text())
            artifacts.write_json(tmp / "streamed.json",
                                 {"passages": header["num_docs"], "tokens": header["num_tokens"],
                                  "duplicates_dropped": len(kb.duplicates)})
    return CorpusIndex.load(cache.path, mmap=True)
