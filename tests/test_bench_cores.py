"""`python -m gemkr.bench_cores` on the `smoke` models (trained here when missing, ~2 min): every
loop is measured with one thread, with every core and as one single-thread process per core at
once (the processes wait for each other before timing), and the table's ratios are its columns'.
Speeds themselves are never asserted (DESIGN: speed goals live in the CSVs)."""

import time

import pytest

from gemkr import bench_cores
from gemkr.config import get_config
from gemkr.hardware import cores


@pytest.fixture(scope="module")
def smoke_trained(smoke_stages):
    smoke_stages("01", "02", "03", "04")


def test_every_loop_measured_three_ways(smoke_trained):
    table = bench_cores.bench_cores("smoke", size=2)
    n = cores()
    assert table["loop"].tolist() == list(bench_cores.LOOPS)
    for col in ("one_thread", f"{n}_threads", f"{n}_processes"):
        assert (table[col] > 0).all(), col
    assert table["threads_over_one"].tolist() == pytest.approx(
        (table[f"{n}_threads"] / table["one_thread"]).tolist())
    assert table["processes_over_threads"].tolist() == pytest.approx(
        (table[f"{n}_processes"] / table[f"{n}_threads"]).tolist())


def test_unknown_loop_and_too_few_questions_are_named():
    with pytest.raises(ValueError, match="unknown loop"):
        bench_cores.measure("GeMKR training", "smoke", threads=1)
    with pytest.raises(SystemExit):  # argparse: not one of the loops
        bench_cores.main(["--loops", "GeMKR training"])


def test_a_failed_measure_stops_every_process(smoke_trained):
    """One child fails (the second half of the test questions is too short for its share) and
    raises at once; its partner, waiting at the barrier for it, is stopped, not left waiting."""
    cfg = get_config("smoke")
    size = cfg.n_scenes[2] * cfg.questions_per_scene // 2 + 1
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="failed"):
        bench_cores._run("GeMKR decoding", "smoke", threads=1, processes=2, size=size)
    assert time.monotonic() - start < 300, "waited for the barrier's timeout"
