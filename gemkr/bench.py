"""Index benchmarks (DESIGN §8): build throughput against the bare suffix sort, bytes per token,
query latencies. Speed goals live here and in the CSVs, never in timed tests.

    python -m gemkr.bench --tokens 1e7 1e8   # synthetic corpora -> bench_index_synthetic.csv
    python -m gemkr.bench --kb-passages 1e6  # a knowledge base file -> bench_kb_file.csv

Notebook 03 calls `bench_index` on the profile's real knowledge bases (-> bench_index.csv).
Targets (issue 4, 2-core CPU, 10M tokens) are carried in the rows of corpora up to 20M tokens,
so each CSV says what it met; larger corpora are judged by their latency ratio to the 10M one.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

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


def write_kb_file(path, n_passages: int, seed: int = 0) -> int:
    """A JSONL knowledge base of `n_passages` made-up passages ("word, word: gloss", 4-24 words
    drawn from a Zipf-skewed list of English words, about 100 bytes each); returns its bytes."""
    import json

    from .data import wordnet

    words = sorted({w for syn in wordnet.load_nouns().values() for lemma in syn.lemmas
                    for w in lemma.replace("_", " ").split() if w.isalpha()})
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n_passages, 100_000):
            n = min(100_000, n_passages - start)
            picks = rng.zipf(1.3, size=(n, 26)) % len(words)
            lengths = rng.integers(4, 25, size=n)
            for i in range(n):
                w = [words[j] for j in picks[i, :lengths[i] + 2]]
                f.write(json.dumps({"id": f"p{start + i}", "text": f"{w[0]}, {w[1]}: "
                                    + " ".join(w[2:])}) + "\n")
    return Path(path).stat().st_size


def _measure_kb_file(path: str, folder: str) -> dict:
    """In this process: `kb.user_index` of the file from nothing (read, check and hash in one
    pass, tokenize, index, save), its seconds and this process's peak resident memory."""
    import resource

    from .kb import user_index
    from .tokenizer import load_tokenizer

    tok = load_tokenizer("smollm2")
    start = time.perf_counter()
    built = user_index(path, tok, "smollm2", "bench", force=True, folder=folder)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"passages": len(built.passages), "tokens": built.index.num_tokens,
            "seconds": seconds, "peak_rss_bytes": peak}


def bench_kb_file(n_passages: int, workdir) -> pd.DataFrame:
    """Write a JSONL of `n_passages` (`write_kb_file`) and index it in a fresh process (so its
    peak memory is the knowledge base's alone); one row of measurements, target: <= 4 GB."""
    import json
    import subprocess
    import sys

    from .hardware import cores, processor

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "passages.jsonl"
    size = write_kb_file(path, n_passages)
    out = subprocess.run([sys.executable, "-m", "gemkr.bench", "--measure-kb-file", str(path),
                          str(work / "index")], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    return pd.DataFrame([{"processor": processor(), "cores": cores(), "passages": m["passages"],
                          "file_MB": size / 1e6,
                          "tokens": m["tokens"], "seconds": m["seconds"],
                          "passages_per_s": m["passages"] / m["seconds"],
                          "peak_rss_GB": m["peak_rss_bytes"] / 1e9, "target_max_GB": 4.0,
                          "meets_target": "yes" if m["peak_rss_bytes"] <= 4e9 else "no"}])


def main(argv: Sequence[str] | None = None) -> None:
    import json

    from . import io

    ap = argparse.ArgumentParser(description="benchmark the corpus index on synthetic corpora")
    ap.add_argument("--tokens", nargs="+", type=float, default=[1e7, 1e8])
    ap.add_argument("--profile", default="default", help="results/<profile>/ receives the CSV")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--kb-passages", type=float, default=None,
                    help="instead: index a JSONL file of this many passages (bench_kb_file.csv)")
    ap.add_argument("--workdir", default=None, help="where --kb-passages writes its file "
                    "(default: a temporary folder)")
    ap.add_argument("--measure-kb-file", nargs=2, metavar=("FILE", "FOLDER"),
                    help=argparse.SUPPRESS)  # the child process of --kb-passages
    args = ap.parse_args(argv)
    if args.measure_kb_file:
        print(json.dumps(_measure_kb_file(*args.measure_kb_file)))
        return
    if args.kb_passages:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            df = bench_kb_file(int(args.kb_passages), args.workdir or tmp)
        print(df.to_string(index=False))
        io.save_table(df, "bench_kb_file", args.profile)
        return
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
