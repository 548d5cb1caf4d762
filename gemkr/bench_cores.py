"""How the `default` run's hottest loops use a CPU's cores: each loop's throughput with one
thread, with every core, and as one single-thread process per core running at once (what
``run_all.sh --processes N`` does with notebooks 04-06 on a CPU). It answers "would more
processes, rather than more threads, make the run fit its budget here?" with a measurement.

    python -m gemkr.bench_cores                # -> results/default/bench_cores.csv

It needs the profile's trained artifacts (run ``./run_all.sh`` first) and a machine doing
nothing else. The loops: MiniLM embedding passages of the largest KB (notebook 03), GeMKR's
constrained decoding of test questions (05, 06) and GeMKR tuning steps (04, 06; under N
processes each computes a micro-batch of batch / N, as `train.fit` shares a step out; the
gradient sum between processes, small for the trainable parts, is not included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

LOOPS = {"MiniLM embedding": "passages/s", "GeMKR decoding": "questions/s",
         "GeMKR tuning step": "examples/s"}
SIZES = {"MiniLM embedding": 4096, "GeMKR decoding": 96, "GeMKR tuning step": 8}  # items/steps


def _wait_for_all(barrier: Path | None, n: int, timeout: float = 900.0) -> None:
    """Start the timed part only when all `n` processes are ready (loaded and warmed up)."""
    if barrier is None:
        return
    (barrier / f"ready-{os.getpid()}").touch()
    give_up = time.monotonic() + timeout
    while len(list(barrier.glob("ready-*"))) < n:
        if time.monotonic() > give_up:
            raise TimeoutError(f"the other processes of the measure never got ready ({barrier})")
        time.sleep(0.05)


def measure(loop: str, profile: str, threads: int, share: int = 1, part: int = 0,
            barrier: Path | None = None, size: int | None = None) -> dict:
    """Items done and seconds taken by `loop` in this process with `threads` threads; `share`
    processes run it at once (this one is number `part`), each on its own slice of the work.
    `size`: passages, questions or steps (default `SIZES`)."""
    if loop not in LOOPS:
        raise ValueError(f"unknown loop {loop!r}: one of {', '.join(LOOPS)}")
    import numpy as np
    import torch

    from . import examples, trained
    from .config import get_config
    from .hardware import autocast, bf16_native

    torch.set_num_threads(threads)
    cfg = get_config(profile)
    n = size or SIZES[loop]
    if loop == "MiniLM embedding":
        from . import embeddings
        from .data import build_benchmark

        texts = build_benchmark(cfg).kb[cfg.kb_names[-1]]["text"].tolist()
        rng = np.random.default_rng([cfg.seed, part])
        texts = [texts[i] for i in rng.choice(len(texts), n + 256, replace=False)]
        encoder = embeddings.minilm_encoder()
        embeddings.encode(encoder, texts[:256])  # warm-up
        _wait_for_all(barrier, share)
        start = time.perf_counter()
        embeddings.encode(encoder, texts[256:])
        return {"items": n, "seconds": time.perf_counter() - start}
    p = trained.pipeline(cfg)
    if loop == "GeMKR decoding":
        from . import evaluate
        from .decoding import DecodeConfig

        test = p.questions("test")
        timed = test.iloc[part * n:(part + 1) * n]
        if len(timed) < n:
            raise ValueError(f"{profile} has {len(test)} test questions, too few for {share} "
                             f"processes x {n}: pass a smaller size")
        warm = timed.iloc[:32]
        dcfg = DecodeConfig.from_config(cfg)
        index = p.indexes[cfg.kb_names[-1]]
        evaluate.gemkr_search(p.model, p.inputs, warm, index, dcfg)
        _wait_for_all(barrier, share)
        run = evaluate.gemkr_search(p.model, p.inputs, timed, index, dcfg)
        return {"items": n, "seconds": run.seconds}
    questions = examples.model_questions(p.bench.split("train"), p.captions, cfg.use_caption)
    targets, _ = examples.clue_targets(questions, p.indexes[cfg.kb_names[-1]],
                                       cfg.clue_max_tokens, cfg.min_clue_tokens)
    micro = max(1, cfg.batch_size // share)
    batches = examples.batches(questions, p.inputs, targets, micro,
                               np.random.default_rng([cfg.seed, part]), cfg.caption_dropout)
    model = p.model.train()
    optimizer = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=1e-5)
    bf16 = bf16_native("cpu")

    def step():
        with autocast("cpu", bf16):
            loss = model(next(batches))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    _wait_for_all(barrier, share)
    start = time.perf_counter()
    for _ in range(n):
        step()
    return {"items": n * micro, "seconds": time.perf_counter() - start}


def _run(loop: str, profile: str, threads: int, processes: int, size: int | None) -> float:
    """Items per second of `processes` child processes running `loop` at once, summed."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "gemkr.bench_cores", "--measure", loop, "--profile",
                   profile, "--threads", str(threads), "--share", str(processes), "--barrier",
                   tmp, *(["--size", str(size)] if size else [])]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        outs = [Path(tmp) / f"out-{i}.json" for i in range(processes)]
        children = []
        try:
            for i, out in enumerate(outs):
                with out.open("w") as f:
                    children.append(subprocess.Popen([*command, "--part", str(i)], stdout=f,
                                                     env=env))
            while True:  # every child polled each time: a failure shows whichever fails
                codes = [c.poll() for c in children]
                if all(code is not None for code in codes) or any(codes):
                    break
                time.sleep(0.1)
            failed = [c.returncode for c in children if c.returncode]
            if failed:
                raise RuntimeError(f"measuring {loop!r} failed (exit {failed[0]}; its error "
                                   "is above)")
            results = [json.loads(out.read_text().strip().splitlines()[-1]) for out in outs]
        finally:  # a failed child leaves the others waiting at the barrier
            for c in children:
                c.kill()
                c.wait()
    return sum(m["items"] / m["seconds"] for m in results)


def bench_cores(profile: str = "default", loops: Sequence[str] = tuple(LOOPS),
                size: int | None = None) -> pd.DataFrame:
    """One row per loop: throughput with 1 thread, with every core, and as one single-thread
    process per core at once; the two ratios that decide between threads and processes."""
    from .hardware import bf16_native, cores, processor

    n = cores()
    rows = []
    for loop in loops:
        one, threads, procs = (_run(loop, profile, 1, 1, size), _run(loop, profile, n, 1, size),
                               _run(loop, profile, 1, n, size))
        rows.append({"loop": loop, "unit": LOOPS[loop], "one_thread": one,
                     f"{n}_threads": threads, f"{n}_processes": procs,
                     "threads_over_one": threads / one, "processes_over_threads": procs / threads,
                     "cores": n, "processor": processor(), "bf16_native": bf16_native("cpu"),
                     "profile": profile})
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="threads or processes: the default run's hottest "
                                 "loops on this CPU")
    ap.add_argument("--profile", default="default", help="trained profile; results/<profile>/ "
                    "receives bench_cores.csv")
    ap.add_argument("--loops", nargs="+", default=list(LOOPS), choices=list(LOOPS))
    ap.add_argument("--measure", choices=list(LOOPS), help=argparse.SUPPRESS)  # child process
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--barrier", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=None, help="passages, questions or tuning "
                    "steps per loop and process (default: 4096, 96, 8)")
    args = ap.parse_args(argv)
    if args.measure:
        barrier = Path(args.barrier) if args.barrier else None
        print(json.dumps(measure(args.measure, args.profile, args.threads, args.share,
                                 args.part, barrier, args.size)))
        return
    from . import io

    io.save_table(bench_cores(args.profile, args.loops, args.size), "bench_cores", args.profile)


if __name__ == "__main__":
    main()
