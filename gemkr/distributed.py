"""Several processes, one result (issue 27): the few helpers the kit needs to train and evaluate
under ``accelerate launch`` / ``torchrun`` with N processes (gloo on CPUs, NCCL on GPUs).

Training shares out each accumulation group's micro-batches (`train.fit`); evaluation shares out
batches of questions round-robin and gathers them back in order (`share`, `gathered`), so a
batch is computed exactly as in a single process and the tables are identical; files are
written by the main process only (`is_main`, `barrier`). In one process every helper is the
identity and nothing is initialised.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence


def launched() -> bool:
    """Whether this process was started by a launcher with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def world() -> tuple[int, int]:
    """(number of processes, this process's index)."""
    if not launched():
        return 1, 0
    s = _state()
    return s.num_processes, s.process_index


def is_main() -> bool:
    return world()[1] == 0


def barrier() -> None:
    if launched():
        _state().wait_for_everyone()


def batch_processes() -> int:
    """How many processes the training batches are shared between (the launcher's count)."""
    return world()[0]


def per_process(batch: int, accum: int = 1) -> tuple[int, int]:
    """(micro-batch, accumulation steps) keeping the global batch ``batch x accum`` of the
    config under `batch_processes()` processes: `train.fit` shares each step's micro-batches
    out, so the accumulation steps must be a multiple of N; the micro-batch shrinks to keep the
    product. One process: unchanged. E.g. 16 x 1 under 2 processes -> 8 x 2 (each process one
    micro-batch of 8 per step); 12 x 2 under 2 -> 12 x 2."""
    n = batch_processes()
    if accum % n == 0:
        return batch, accum
    steps = math.lcm(accum, n)
    if batch % (steps // accum):
        raise ValueError(f"a global batch of {batch} x {accum} cannot be shared evenly between "
                         f"{n} processes: {steps} accumulation steps need a batch divisible by "
                         f"{steps // accum}; change the batch size or the number of processes")
    return batch // (steps // accum), steps


def agreed(value):
    """The main process's `value`, on every process (a decision all must take alike, such as
    whether a cache is valid: another process may be writing it at that moment)."""
    if not launched():
        return value
    import torch.distributed as dist

    _state()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share(items: Sequence) -> list:
    """This process's items: item b goes to process b mod N."""
    n, rank = world()
    return list(items)[rank::n]


def gathered(parts: dict) -> dict:
    """Every process's `parts` (key -> result) merged, on every process."""
    n, _ = world()
    if n == 1:
        return dict(parts)
    import torch.distributed as dist

    out: list = [None] * n
    dist.all_gather_object(out, parts)
    return {k: v for part in out for k, v in part.items()}


def in_batches(fn, n_items: int, batch_size: int, progress=None) -> list:
    """``fn(start, stop)`` for every batch of `n_items`, the batches shared out between the
    processes and their results (a list per batch) concatenated back in order on every process.
    `progress`: a wrapper for this process's batch starts (a progress bar)."""
    starts = share(range(0, n_items, batch_size))
    mine = {s: fn(s, min(s + batch_size, n_items))
            for s in (progress(starts) if progress else starts)}
    return [r for _, part in sorted(gathered(mine).items()) for r in part]
