"""The WK21M-scale index benchmark (issue 27) on a corpus small enough for a test: the streamed
corpus has the stated shape, the measured index answers like an in-memory one, the rows carry
their targets, and a disk too small is named before anything is built."""

import numpy as np
import pandas as pd
import pytest

from gemkr import bench_wk21m
from gemkr.index import CorpusIndex


def test_the_synthetic_corpus_has_wk21m_shape():
    docs = list(bench_wk21m.wk21m_passages(300_000, seed=3))
    lengths = np.array([d.size for d in docs])
    assert lengths.sum() == 300_000
    assert (lengths[:-1] >= 1).all() and np.median(lengths) == pytest.approx(100, abs=2)
    inner = np.concatenate(docs)
    assert inner.min() >= 10 and inner.max() < bench_wk21m.VOCAB  # no specials inside passages
    again = list(bench_wk21m.wk21m_passages(300_000, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(docs, again, strict=True))


def test_the_benchmark_measures_a_sharded_streamed_index(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_wk21m, "SHARD_TOKENS", 120_000)  # three shards of 300K tokens
    df = bench_wk21m.bench_wk21m(300_000, tmp_path, n_queries=20, bare_shards=2, keep=True,
                                 progress=False)
    v = df.set_index("metric")["value"]
    assert v["shards"] == 3 and v["tokens"] == 300_000 + 2 * v["passages"]
    assert 0 < v["build_over_bare_sort"] and 0 < v["disk_bytes_per_token"] < 20
    assert set(df.loc[df["target_max"].notna(), "metric"]) == set(bench_wk21m.TARGETS)
    assert set(df["meets_target"]) <= {"yes", "no", ""}
    # the measured index is the one `build` makes in memory from the same passages
    folder = next(tmp_path.glob("wk21m_*"))
    disk = CorpusIndex.load(folder)
    mem = CorpusIndex.build(list(bench_wk21m.wk21m_passages(300_000)), eos=2, bos=1,
                            vocab_size=bench_wk21m.VOCAB, shard_tokens=120_000, progress=False)
    assert disk.content_key == mem.content_key


def test_a_disk_too_small_is_named_before_building(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**10, 0, 4 * 10**9))
    with pytest.raises(OSError, match="free"):
        bench_wk21m.bench_wk21m(2 * 10**9, tmp_path)
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**11, 0, 12 * 10**9))
    n, why = bench_wk21m.tokens_that_fit(2 * 10**9, tmp_path)
    assert bench_wk21m.MIN_TOKENS <= n < 2 * 10**9 and "instead of" in why


def test_the_command_writes_its_table(tmp_path):
    import subprocess
    import sys

    from gemkr.paths import REPO_ROOT

    out = tmp_path / "bench.csv"
    proc = subprocess.run([sys.executable, "-m", "gemkr", "bench-index", "--tokens", "2e5",
                           "--workdir", str(tmp_path / "w"), "--queries", "10", "--out",
                           str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ,
                                            "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = pd.read_csv(out)
    assert df["metric"].tolist()[:3] == ["tokens", "passages", "shards"]
    assert not list((tmp_path / "w").glob("wk21m_*")), "the index is removed unless --keep"
