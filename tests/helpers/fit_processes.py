"""Train a small model with `train.fit`, in one process or under torchrun (tests/test_distributed):
    python tests/helpers/fit_processes.py OUT.safetensors [--grad-accum G] [--ckpt DIR]
                                          [--crash-after-epoch E]
A Linear -> dropout -> Linear model on fixed random data, 3 epochs of 7 micro-batches (the last
accumulation group of each epoch is short); writes the final trainable tensors and the loss
history (main process only)."""

import argparse
import json
import sys

import numpy as np
import torch

from gemkr import train
from gemkr.distributed import is_main

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--grad-accum", type=int, default=2)
ap.add_argument("--ckpt", default=None)
ap.add_argument("--crash-after-epoch", type=int, default=None)
args = ap.parse_args()

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
data = torch.from_numpy(np.random.default_rng(0).normal(size=(7 * 5, 6))).float()
target = data.sum(1, keepdim=True)


def batches(epoch):
    if args.crash_after_epoch is not None and epoch == args.crash_after_epoch:
        sys.exit(3)  # an interrupted run: the checkpoint of the epochs before is on disk
    order = np.random.default_rng([0, epoch]).permutation(len(data))
    for s in range(0, len(data), 5):
        yield order[s:s + 5]


def loss_fn(m, idx):
    return torch.nn.functional.mse_loss(m(data[idx]), target[idx])


out = train.fit(model, loss_fn, batches, epochs=3, steps_per_epoch=7, lr=0.05, min_lr=0.005,
                warmup_steps=2, weight_decay=0.01, grad_accum=args.grad_accum,
                ckpt_dir=args.ckpt, desc="fit")
if is_main():
    from safetensors.torch import save_file

    save_file(train.trainable_state(model), args.out)
    with open(args.out + ".json", "w") as f:
        json.dump({"history": out["history"], "processes": out["processes"]}, f)
