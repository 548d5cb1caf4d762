"""The smoke profile's GeMKR in one process or under torchrun (tests/test_distributed):

    python tests/helpers/smoke_processes.py OUT_DIR [--train] [--as-processes N]

Loads the smoke pipeline the way notebooks 04/05 do (training what is missing), then evaluates
GeMKR and every baseline of 05 on the test questions of the first knowledge base.
  --train           retrain the GeMKR tuning stage (its cache is rebuilt; the stages before it
                    come from the cache);
  --as-processes N  in one process, split the batches as N processes do (micro-batch and
                    accumulation from `distributed.per_process`): the single-process run with
                    the global batch and the micro-batches of an N-process run.
The main process writes OUT_DIR/tuning.safetensors (the tuned trainable tensors) and
OUT_DIR/tables.json (each method's scores and ranked passages)."""

import argparse
import json
from pathlib import Path

from gemkr import baselines, distributed, embeddings, evaluate, train, trained
from gemkr.config import get_config
from gemkr.decoding import DecodeConfig

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--train", action="store_true")
ap.add_argument("--as-processes", type=int, default=None)
args = ap.parse_args()
if args.as_processes:
    distributed.batch_processes = lambda: args.as_processes

cfg = get_config("smoke", 0)
p = trained.pipeline(cfg, train_if_missing=True, force=args.train)
kb_name = cfg.kb_names[0]
kb = p.bench.kb[kb_name]
encoder = embeddings.minilm_encoder()
vectors, _ = embeddings.kb_embeddings("smoke", p.bench.kb, encoder)
dense = baselines.DenseText(kb, encoder, embeddings=vectors[kb_name])
runners = evaluate.methods(p.model, p.inputs, p.indexes[kb_name], DecodeConfig.from_config(cfg),
                           baselines.BM25(kb), dense,
                           evaluate.ClipDense(p.clip, p.clip_tokenizer, dense),
                           baselines.RandomFloor(kb, seed=cfg.seed))
texts = dict(zip(kb["pid"].tolist(), kb["text"].tolist(), strict=True))
scores, _, runs = evaluate.evaluate_methods(runners, {"test": p.questions("test")}, texts,
                                            cfg.eval_ks, cfg.answer_lowercase, seed=cfg.seed)
if distributed.is_main():
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(train.trainable_state(p.model), str(out / "tuning.safetensors"))
    tables = {"scores": scores.round(12).to_dict(orient="records"),
              "ranked": {m: [list(map(int, r)) for r in run.ranked] for (_, m), run in
                         runs.items()},
              "clues": {m: run.clues for (_, m), run in runs.items() if run.clues},
              "processes": distributed.world()[0]}
    (out / "tables.json").write_text(json.dumps(tables, default=str))
