"""Training loop shared by the three stages of notebook 04 (paper-notes §10, trap T13).

AdamW (weight decay only on matrices that are not biases or norms), linear warm-up then cosine
decay to a floor, gradient accumulation, device placement through `accelerate` (the same code runs
on a CPU, one GPU or several), a progress bar, and an atomic checkpoint after every epoch holding
only the trainable tensors (safetensors) plus optimizer and scheduler state, so an interrupted run
resumes where it stopped. Steps are derived from the data, never from a fixed iters_per_epoch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .artifacts import atomic_path, write_json
from .hardware import autocast
from .progress import bar as progress_bar


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Official rule: decay tensors with ndim >= 2 whose name has no bias / ln / bn / norm."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim >= 2 and not any(k in name for k in ("bias", "ln", "bn", "norm"))
        (decay if plain else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup: int, total: int, peak: float, floor: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to `peak`, then cosine to `floor` (both absolute)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        t = min(1.0, (step - warmup) / max(total - warmup, 1))
        return (floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))) / peak
    return factor


class WeightsMismatchError(ValueError):
    """Stored trainable tensors that are not exactly the ones the model trains."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], where) -> None:
    """Load saved trainable tensors into `model`, refusing any set other than exactly the one
    `trainable_state` saves: ``load_state_dict(strict=False)`` alone would leave a tensor the
    file lacks (a LoRA matrix, a dual-flow gate) at its fresh value without a word."""
    want = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    shapes = sorted(n for n in set(want) & set(weights) if want[n].shape != weights[n].shape)
    if missing or unexpected or shapes:
        raise WeightsMismatchError(
            f"{where} holds other trainable tensors than this model's (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shapes {shapes[:3]}): it belongs to another "
            "model configuration; delete it and run again (or set FORCE=True)")
    model.load_state_dict(weights, strict=False)


def save_checkpoint(directory: Path, model, optimizer, scheduler, epoch: int,
                    history: list[float]) -> None:
    """Trainable weights (safetensors) + optimizer/scheduler state and the torch RNG state
    (dropout, LoRA's included, draws from it: without it a resumed run trains on other dropout
    masks); `state.json` written last."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "trainable.safetensors") as tmp:
        save_file(trainable_state(model), str(tmp))
    with atomic_path(directory / "optimizer.pt") as tmp:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, tmp)
    write_json(directory / "state.json", {"epoch": epoch, "history": history})


def load_checkpoint(directory: Path, model, optimizer=None, scheduler=None) -> dict | None:
    """Restore a checkpoint written by `save_checkpoint`; None when there is none."""
    from safetensors.torch import load_file

    state_file = directory / "state.json"
    if not state_file.exists():
        return None
    load_trainable(model, load_file(str(directory / "trainable.safetensors")),
                   f"checkpoint {directory}")
    if optimizer is not None:
        # weights_only: plain tensors and numbers only, no pickled code
        opt = torch.load(directory / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        if "rng" in opt:
            torch.set_rng_state(opt["rng"])
    return json.loads(state_file.read_text())


def fit(model: torch.nn.Module, loss_fn: Callable, epoch_batches: Callable[[int], Iterable], *,
        epochs: int, steps_per_epoch: int, lr: float, min_lr: float, warmup_steps: int,
        weight_decay: float, grad_accum: int = 1, ckpt_dir: Path | None = None,
        desc: str = "training", device: str = "cpu", bf16: bool = False) -> dict:
    """Train the parameters of `model` that require grad; returns the loss history (one value
    per optimizer step: its micro-batches' mean) and wall time.

    `epoch_batches(epoch)` yields the micro-batches of one epoch (seeded by the caller: every
    process draws the same ones); `loss_fn(model, batch)` returns a scalar loss, computed under
    bfloat16 autocast when `bf16` (the caller checks `hardware.bf16_native`; parameters and
    optimizer state stay float32). Resumes from `ckpt_dir` when it holds a checkpoint.

    Under ``accelerate launch`` / ``torchrun`` with N processes, each accumulation group of
    `grad_accum` micro-batches is shared out: process r computes micro-batches r, r+N, ...,
    the gradients are summed across processes once per group, and every process takes the same
    optimizer step. The global batch is therefore ``batch size x grad_accum`` whatever N (keep
    it by lowering the micro-batch and raising `grad_accum`; `grad_accum` must be a multiple of
    N), and the weights equal a single process's up to the order of float additions. Dropout
    draws from a generator seeded per micro-batch (`_micro_batch_seed`), so it does not depend
    on which process computes a micro-batch either.
    """
    import contextlib

    from accelerate import Accelerator

    acc = Accelerator(cpu=device == "cpu")
    n_proc, rank = acc.num_processes, acc.process_index
    if grad_accum % n_proc:
        raise ValueError(f"grad_accum={grad_accum} is not a multiple of the {n_proc} processes: "
                         "each process computes grad_accum / N micro-batches of every step; set "
                         f"grad_accum to a multiple of {n_proc} (and the micro-batch size to the "
                         "global batch / grad_accum)")
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999))
    total = max(1, epochs * math.ceil(steps_per_epoch / grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup_steps, total, lr, min_lr))
    if n_proc == 1:
        model, optimizer = acc.prepare(model, optimizer)
    else:  # no DDP wrapper: `_sum_gradients` runs once per step on every process, also on one
        model = model.to(acc.device)  # with no micro-batch in a short last group
    history, start_epoch = [], 0
    if ckpt_dir is not None:
        state = load_checkpoint(Path(ckpt_dir), acc.unwrap_model(model), optimizer, scheduler)
        if state is not None:
            start_epoch, history = state["epoch"], state["history"]
    base_seed = torch.initial_seed()  # the stage's seed (`torch.manual_seed(cfg.seed)`)
    start = time.perf_counter()
    model.train()
    end = object()
    for epoch in range(start_epoch, epochs):
        bar = progress_bar(total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{epochs}",
                           disable=not acc.is_main_process)
        batches = iter(epoch_batches(epoch))
        batch, i, losses = next(batches, end), 0, {}
        while batch is not end:
            following, i = next(batches, end), i + 1
            # Accumulation groups never cross an epoch: the epoch's last batch always steps, so
            # the checkpoint written after it holds the whole state (an interrupted run resumes
            # bitwise; accelerate's own counter would carry a partial group into the next epoch).
            sync = i % grad_accum == 0 or following is end
            if (i - 1) % n_proc == rank:  # this process's share of the micro-batches
                quiet = n_proc == 1 and not sync
                with contextlib.nullcontext() if not quiet else acc.no_sync(model):
                    with torch.random.fork_rng(devices=[]), autocast(device, bf16):
                        torch.manual_seed(_micro_batch_seed(base_seed, epoch, i))
                        loss = loss_fn(model, batch)
                    acc.backward(loss / grad_accum)
                losses[i] = float(loss.detach())
            if sync:
                if n_proc > 1:
                    _sum_gradients(model)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            bar.update()
            if i in losses:
                bar.set_postfix(loss=f"{losses[i]:.3f}")
            batch = following
        bar.close()
        history += _step_losses(_gathered_losses(losses), grad_accum)
        if ckpt_dir is not None and acc.is_main_process:
            save_checkpoint(Path(ckpt_dir), acc.unwrap_model(model), optimizer, scheduler,
                            epoch + 1, history)
        acc.wait_for_everyone()
    model.eval()
    return {"history": history, "seconds": time.perf_counter() - start,
            "resumed_from_epoch": start_epoch, "precision": "bf16 autocast" if bf16 else "fp32",
            "processes": n_proc, "grad_accum": grad_accum}


def _micro_batch_seed(base: int, epoch: int, i: int) -> int:
    """The torch seed of micro-batch `i` of `epoch` (dropout masks): a function of the position
    only, so one process or several, first run or resumed, draw the same masks."""
    return (base * 1_000_003 + epoch * 65_537 + i) % (2**63 - 1)


def _sum_gradients(model: torch.nn.Module) -> None:
    """Add up the trainable gradients of every process, in one flat all-reduce (a process with
    no micro-batch in this step adds zeros)."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    o = 0
    for p in params:
        p.grad = flat[o:o + p.numel()].view_as(p).clone()
        o += p.numel()


def _step_losses(micro: list[float], grad_accum: int) -> list[float]:
    """One loss per optimizer step: the mean of its micro-batches' losses (groups of
    `grad_accum`, the epoch's last one possibly short), so a loss curve has the same steps
    whatever the accumulation and the number of processes."""
    return [sum(g) / len(g) for g in (micro[s:s + grad_accum]
                                      for s in range(0, len(micro), grad_accum))]


def _gathered_losses(losses: dict[int, float]) -> list[float]:
    """The epoch's micro-batch losses in order, from every process (`gathered` returns them
    unchanged in one process)."""
    from .distributed import gathered

    merged = gathered(losses)
    return [merged[i] for i in sorted(merged)]


def pad_batch(seqs: list[list[int]], label_from: list[int], pad: int) -> dict:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` of token sequences; labels are
    the tokens from position ``label_from[i]`` on and -100 before it and on padding (masked by
    length, not by pad id: pad may equal eos)."""
    n = max(map(len, seqs))
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    labels = torch.full((len(seqs), n), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (seq, start) in enumerate(zip(seqs, label_from, strict=True)):
        ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, start:len(seq)] = torch.tensor(seq[start:])
        mask[i, :len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lm_batches(docs: list, batch_size: int, rng, bos: int, eos: int, pad: int,
               max_len: int = 128, add_eos: bool = True) -> Iterable[dict]:
    """Shuffled batches of passages ``[bos] doc [eos]`` for LLM knowledge pretraining ("LLM as
    knowledge base"); ``add_eos=False`` when `docs` carry their EOS where they end."""
    order = rng.permutation(len(docs))
    end = [eos] if add_eos else []
    for s in range(0, len(order), batch_size):
        seqs = [[bos, *map(int, docs[i][: max_len - 2]), *end] for i in order[s:s + batch_size]]
        yield pad_batch(seqs, [1] * len(seqs), pad)  # never predict the BOS itself


def lm_loss(llm, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM (transformers shifts the labels)."""
    dev = next(llm.parameters()).device
    return llm(**{k: v.to(dev) for k, v in batch.items()}).loss
