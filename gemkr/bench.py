"""Index benchmarks (DESIGN §8): build throughput against the bare suffix sort, bytes per token,
query latencies. Speed goals live here and in the CSVs, never in timed tests.

    python -m gemkr.bench --tokens 1e7 1e8   # synthetic corpora -> bench_index_synthetic.csv

Notebook 03 calls `bench_index` on the profile's real knowledge bases (-> bench_index.csv).
Targets (issue 4, 2-core CPU, 10M tokens) are carried in the rows of corpora up to 20M tokens,
so each CSV says what it met; larger corpora are judged by their latency ratio to the 10M one.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .index import CorpusIndex

TARGETS = {  # metric -> (bound, "max"): the value must stay at or below the bound
    "build_over_bare_sort": 2.0, "resident_bytes_per_token": 8.0,
    "peak_build_bytes_per_token": 12.0, "beam7_ms_mean": 0.5, "docs8_ms_mean": 1.0,
}


def synthetic_corpus(n_tokens: int, vocab_size: int = 49_152, seed: int = 0) -> list[np.ndarray]:
    """Zipf(1.2)-distributed token ids in passages of 10-59 tokens (text-like frequency skew:
    a few very wide intervals, a long tail of rare tokens). Generated in chunks."""
    rng = np.random.default_rng(seed)
    docs: list[np.ndarray] = []
    made = 0
    while made < n_tokens:
        toks = (rng.zipf(1.2, size=min(1 << 22, n_tokens - made)) % (vocab_size - 10) + 10)
        toks = toks.astype(np.uint16 if vocab_size <= 65536 else np.uint32)
        cuts = np.cumsum(rng.integers(10, 60, size=toks.size // 10 + 1))
        docs.extend(np.split(toks, cuts[cuts < toks.size]))
        made += toks.size
    return docs


def _timeit(fn, items) -> np.ndarray:
    out = np.empty(len(items))
    for i, x in enumerate(items):
        t = time.perf_counter()
        fn(x)
        out[i] = time.perf_counter() - t
    return out * 1e3  # ms


def _ngrams(idx: CorpusIndex, m: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """k n-grams of length m drawn at random positions of the stored stream (inside passages)."""
    text = idx.shards[0].text
    out = []
    while len(out) < k:
        j = int(rng.integers(0, text.size - max(m, 1)))
        g = text[j:j + m].tolist()
        if idx.eos not in g[:-1]:
            out.append(g)
    return out


def bench_index(docs: Sequence[Sequence[int]], corpus: str, *, vocab_size: int, eos: int,
                bos: int | None, n_queries: int = 300, seed: int = 0,
                measure_peak: bool = True) -> pd.DataFrame:
    """Build the index of `docs` and measure it; returns tidy rows (corpus, metric, value, ...)."""
    import pydivsufsort

    rng = np.random.default_rng(seed)
    build = lambda: CorpusIndex.build(docs, eos=eos, bos=bos, vocab_size=vocab_size,  # noqa: E731
                                      progress=False)
    t = time.perf_counter()
    idx = build()
    build_s = time.perf_counter() - t
    text = np.array(idx.shards[0].text)  # same tokens, writable copy for the bare sort
    t = time.perf_counter()
    pydivsufsort.divsufsort(text)
    bare_s = time.perf_counter() - t
    n = idx.num_tokens
    rows = [("tokens", n, "count"), ("passages", idx.num_docs, "count"),
            ("build_s", build_s, "s"), ("bare_sort_s", bare_s, "s"),
            ("build_over_bare_sort", build_s / bare_s, "ratio"),
            ("build_tokens_per_s", n / build_s, "tokens/s"),
            ("resident_bytes_per_token", idx.nbytes() / n, "bytes")]
    if measure_peak:  # a second, untimed build under tracemalloc (numpy reports its buffers)
        del idx
        tracemalloc.start()
        idx = build()
        rows.append(("peak_build_bytes_per_token", tracemalloc.get_traced_memory()[1] / n,
                     "bytes"))
        tracemalloc.stop()
    for m in (0, 1, 2, 4, 8):
        pats = _ngrams(idx, m, n_queries, rng)
        for name, fn in (("count", idx.count), ("continuations", idx.continuations)):
            ms = _timeit(fn, pats)
            rows += [(f"{name}_len{m}_ms_mean", ms.mean(), "ms"),
                     (f"{name}_len{m}_ms_p99", np.percentile(ms, 99), "ms")]

    def beam(p: list[int]) -> None:  # one beam over 7 steps: allowed set, then extend
        st = idx.root()
        for tok in p[:7]:
            idx.allowed(st)
            st = idx.extend(st, tok)

    clues = _ngrams(idx, 8, n_queries, rng)
    ms = _timeit(beam, clues)
    rows += [("beam7_ms_mean", ms.mean(), "ms"), ("beam7_ms_p99", np.percentile(ms, 99), "ms")]
    rows.append(("docs8_ms_mean", _timeit(idx.docs, clues).mean(), "ms"))
    df = pd.DataFrame(rows, columns=["metric", "value", "unit"])
    df.insert(0, "corpus", corpus)
    df["target_max"] = df["metric"].map(TARGETS) if n <= 20_000_000 else np.nan
    df["meets_target"] = np.where(df["target_max"].isna(), "", np.where(
        df["value"] <= df["target_max"], "yes", "no"))
    return df


def latency_ratios(df: pd.DataFrame, small: str, large: str) -> pd.DataFrame:
    """Continuation latency of corpus `large` over `small`, per prefix length (target <= 3)."""
    rows = []
    v = df.set_index(["corpus", "metric"])["value"]
    for m in (0, 1, 2, 4, 8):
        key = f"continuations_len{m}_ms_mean"
        rows.append({"corpus": f"{large}/{small}", "metric": f"{key}_ratio",
                     "value": v[(large, key)] / v[(small, key)], "unit": "ratio",
                     "target_max": 3.0})
    out = pd.DataFrame(rows)
    out["meets_target"] = np.where(out["value"] <= 3.0, "yes", "no")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from . import io

    ap = argparse.ArgumentParser(description="benchmark the corpus index on synthetic corpora")
    ap.add_argument("--tokens", nargs="+", type=float, default=[1e7, 1e8])
    ap.add_argument("--profile", default="default", help="results/<profile>/ receives the CSV")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args(argv)
    frames = []
    for n in args.tokens:
        label = f"synthetic_{int(n / 1e6)}M"
        print(f"building {label} ...", flush=True)
        frames.append(bench_index(synthetic_corpus(int(n)), label, vocab_size=49_152, eos=2,
                                  bos=1, n_queries=args.queries))
        print(frames[-1].to_string(index=False), flush=True)
    df = pd.concat(frames, ignore_index=True)
    labels = df["corpus"].unique().tolist()
    if len(labels) >= 2:
        df = pd.concat([df, latency_ratios(df, labels[0], labels[-1])], ignore_index=True)
    io.save_table(df, "bench_index_synthetic", args.profile)


if __name__ == "__main__":
    main()
