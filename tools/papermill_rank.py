"""One process of a notebook run under torchrun (``./run_all.sh --processes N``):

    python -m torch.distributed.run --standalone --nproc_per_node N tools/papermill_rank.py \
        IN.ipynb OUT.ipynb [papermill options]

Every process executes the notebook with papermill; its kernel inherits torchrun's RANK /
WORLD_SIZE / MASTER_ADDR, so `gemkr.distributed` and `train.fit` find the process group. The main
process (rank 0) writes OUT and prints to this terminal; the others write their executed copy and
their output under logs/<profile>/ beside OUT's log (``<name>.rank<r>.ipynb`` / ``.log``).
"""

import os
import sys
from pathlib import Path

rank = int(os.environ.get("RANK", "0"))
args = sys.argv[1:]
if len(args) < 2:
    sys.exit("usage: papermill_rank.py IN.ipynb OUT.ipynb [papermill options]")
if rank:
    out = Path(args[1])
    logs = Path("logs") / out.parent.parent.name  # results/<profile>/executed/X -> logs/<profile>
    logs.mkdir(parents=True, exist_ok=True)
    args[1] = str(logs / f"{out.stem}.rank{rank}.ipynb")
    log = open(logs / f"{out.stem}.rank{rank}.log", "w")  # noqa: SIM115 (lives until exec)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
os.execv(sys.executable, [sys.executable, "-m", "papermill", *args])
