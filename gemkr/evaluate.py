"""The scoring harness of notebooks 05-08: every method returns ranked passage ids per query, and
one function scores them all (`metrics.score_run`), so GeMKR and the baselines are compared on the
same queries with the same metric code. Latency is measured the same way for every method: the
batched run gives throughput, a sample of single-query calls gives per-query latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import examples, metrics
from .decoding import Clue, DecodeConfig, rank_passages
from .detect import input_text
from .progress import bar


@dataclass
class Run:
    """One method's answers to a list of queries."""

    method: str
    ranked: list[list[int]]
    seconds: float  # wall time of the whole (batched) run
    clues: list[list[Clue]] = field(default_factory=list)  # GeMKR only
    qids: list = field(default_factory=list)  # question ids, when the caller records them

    @property
    def qps(self) -> float:
        return len(self.ranked) / max(self.seconds, 1e-9)


def gemkr_search(model, inputs: dict, questions: pd.DataFrame, index, dcfg: DecodeConfig,
                 batch_size: int = 32, desc: str = "GeMKR") -> Run:
    """Constrained decoding for every question; the retrieval is the clues' passages in clue
    order (de-duplicated), as the official evaluation ranks them."""
    from .distributed import in_batches

    start = time.perf_counter()
    # under N processes each decodes its share of the batches (the same batches as in one
    # process, so the same clues), gathered back in question order
    clues = in_batches(lambda a, b: model.retrieve(examples.make_batch(questions.iloc[a:b],
                                                                       inputs), index, dcfg),
                       len(questions), batch_size,
                       progress=lambda s: bar(s, desc=desc, leave=False))
    ranked = [rank_passages(c) for c in clues]
    return Run(desc, ranked, time.perf_counter() - start, clues)


def latency(call: Callable[[int], object], n_queries: int, sample: int, seed: int = 0) -> dict:
    """Per-query latency of single-query calls ``call(i)`` on a fixed random sample."""
    rng = np.random.default_rng(seed)
    take = rng.choice(n_queries, size=min(sample, n_queries), replace=False)
    times = []
    for i in take:
        start = time.perf_counter()
        call(int(i))
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3
    return {"latency_ms_mean": float(ms.mean()), "latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p95": float(np.percentile(ms, 95)), "latency_queries": len(ms)}


def score(run: Run, questions: pd.DataFrame, texts: dict[int, str], ks: Sequence[int],
          lowercase: bool = True) -> pd.DataFrame:
    """Both relevance modes of a run (gold passage id; answer substring)."""
    return metrics.score_run(run.ranked, questions["gold_pid"].tolist(),
                             questions["answers"].tolist(), texts, ks=ks, lowercase=lowercase)


def by_category(run: Run, questions: pd.DataFrame, texts: dict[int, str],
                ks: Sequence[int]) -> pd.DataFrame:
    """Gold-id scores of a run per object category."""
    rows = []
    for cat, idx in questions.groupby("category").indices.items():
        sub = questions.iloc[idx]
        part = Run(run.method, [run.ranked[i] for i in idx], 0.0)
        s = score(part, sub, texts, ks).query("relevance == 'gold_id'").assign(category=cat)
        rows.append(s)
    return pd.concat(rows, ignore_index=True)


def by_ref_kind(runs: dict[str, Run], questions: pd.DataFrame, ks: Sequence[int] = (1, 5),
                against: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Gold-passage R@k of each method's run per kind of reference (``ref_kind``) and overall:
    one row per (method, ref_kind) with the number of questions. With `against` (a method of
    `runs`), also each method's R@1 minus `against`'s on the same questions of the kind, with
    its paired bootstrap 95 % interval (``ΔR@1``, ``ci95_low``, ``ci95_high``; NaN on
    `against`'s own rows): one question moves a kind's R@1 by 1 / ``n_queries``, so on a kind of
    a few dozen questions a difference is read with its interval."""
    from .metrics import gold_hits, paired_bootstrap

    if against is not None and against not in runs:
        raise KeyError(f"by_ref_kind(against={against!r}): no such run; runs are {list(runs)}")
    rows = []
    gold = questions["gold_pid"].tolist()
    ref = None if against is None else gold_hits(runs[against].ranked, gold, 1)
    for method, run in runs.items():
        hits = {k: gold_hits(run.ranked, gold, k) for k in {*ks, 1}}  # R@1 for the Δ
        top = hits[1]
        for kind, idx in [*questions.groupby("ref_kind").indices.items(),
                          ("all", np.arange(len(questions)))]:
            row = {"method": method, "ref_kind": kind, "n_queries": len(idx),
                   **{f"R@{k}": float(hits[k][idx].mean()) for k in ks}}
            if ref is not None:
                d = ((np.nan,) * 3 if method == against
                     else paired_bootstrap(top[idx], ref[idx], seed=seed))
                row |= {"against": against, "ΔR@1": d[0], "ci95_low": d[1], "ci95_high": d[2]}
            rows.append(row)
    return pd.DataFrame(rows)


def by_caption(runs: dict[str, Run], questions: pd.DataFrame, labels: dict[int, list[str]],
               ks: Sequence[int] = (1, 5)) -> pd.DataFrame:
    """Gold-passage R@k of each method on the questions whose detector caption names the gold
    object (``caption_names_gold``) and on those whose caption does not (the detector missed or
    mislabelled it): what a model that only copies the caption cannot find."""
    from .metrics import gold_hits

    named = np.asarray([t in labels.get(int(s), []) for s, t in
                        zip(questions["scene_id"], questions["target_name"], strict=True)])
    gold = questions["gold_pid"].tolist()
    rows = []
    for method, run in runs.items():
        hits = {k: gold_hits(run.ranked, gold, k) for k in ks}
        for flag in (True, False):
            idx = np.flatnonzero(named == flag)
            rows.append({"method": method, "caption_names_gold": flag, "n_queries": len(idx),
                         **{f"R@{k}": float(hits[k][idx].mean()) if len(idx) else float("nan")
                            for k in ks}})
    return pd.DataFrame(rows)


def paired_against(runs: dict[str, Run], questions: pd.DataFrame, reference: str = "GeMKR",
                   k: int = 5, seed: int = 0) -> pd.DataFrame:
    """`reference`'s gold-passage R@k minus each other method's on the same questions, with a
    paired bootstrap 95 % interval (`metrics.paired_bootstrap`)."""
    from .metrics import gold_hits, paired_bootstrap

    gold = questions["gold_pid"].tolist()
    ref = gold_hits(runs[reference].ranked, gold, k)
    rows = []
    for method, run in runs.items():
        if method == reference:
            continue
        hits = gold_hits(run.ranked, gold, k)
        diff, lo, hi = paired_bootstrap(ref, hits, seed=seed)
        rows.append({"method": method, f"R@{k} {reference}": float(ref.mean()),
                     f"R@{k}": float(hits.mean()), f"ΔR@{k}": diff, "ci95_low": lo,
                     "ci95_high": hi, "n_queries": len(hits)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ CLIP dense retrieval
class ClipDense:
    """Dense retrieval with the kit's contrastively trained image tower against the KB passages
    embedded by its (locked) MiniLM text tower: image -> passage, or image + question -> passage
    (sum of the two unit vectors, renormalised)."""

    def __init__(self, clip, clip_tokenizer, dense_text):
        self.clip, self.tokenizer, self.dense = clip, clip_tokenizer, dense_text

    @torch.no_grad()
    def search(self, images: torch.Tensor, texts: Sequence[str] | None = None, k: int = 10,
               batch: int = 256) -> tuple[list[list[int]], float]:
        start = time.perf_counter()
        q = torch.cat([self.clip.encode_image(images[s:s + batch], normalize=True)
                       for s in range(0, len(images), batch)])
        if texts is not None:
            q = torch.nn.functional.normalize(q + torch.as_tensor(self.dense.embed(texts)), dim=-1)
        _, idx = self.dense.index.search(q.numpy().astype(np.float32), min(k, len(self.dense.pids)))
        ranked = [self.dense.pids[row[row >= 0]].tolist() for row in idx]
        return ranked, time.perf_counter() - start


    @torch.no_grad()
    def search_crops_scored(self, objects: torch.Tensor, mask: torch.Tensor, k: int = 10
                            ) -> tuple[list[list[tuple[int, float]]], float]:
        """Image -> passage over the *detected crops*: each crop's embedding (what the tower was
        trained to match with passages) searches the KB; a passage scores the best of its crops.
        Per query the top-k (passage id, cosine) pairs, and the seconds it took.

        objects: (Q,M,width) raw final-block CLS of each crop (`examples.scene_inputs`); the
        tower's embedding is its pooling of the CLS (`vision.trunk_of(...).pool`; the kit's ViT:
        ``ln_post(cls) @ proj``). A scene without detections retrieves nothing."""
        from .vision import trunk_of

        start = time.perf_counter()
        emb = torch.nn.functional.normalize(trunk_of(self.clip.visual).pool(objects[mask]), dim=-1)
        scores, idx = self.dense.index.search(emb.numpy().astype(np.float32),
                                              min(k, len(self.dense.pids)))
        owner = torch.nonzero(mask)[:, 0].tolist()
        best: list[dict[int, float]] = [{} for _ in range(len(objects))]
        for q, row, sc in zip(owner, idx, scores, strict=True):
            for i, v in zip(row[row >= 0], sc[row >= 0], strict=True):
                best[q][int(i)] = max(best[q].get(int(i), -np.inf), float(v))
        hits = [[(self.dense.pids[i].item(), b[i]) for i in sorted(b, key=lambda i: -b[i])[:k]]
                for b in best]
        return hits, time.perf_counter() - start

    def search_crops(self, objects: torch.Tensor, mask: torch.Tensor, k: int = 10
                     ) -> tuple[list[list[int]], float]:
        """`search_crops_scored` without the scores."""
        hits, seconds = self.search_crops_scored(objects, mask, k)
        return [[pid for pid, _ in h] for h in hits], seconds


# ----------------------------------------------------------------------- all methods on one KB
def query_views(questions: pd.DataFrame, inputs: dict) -> dict:
    """What each kind of method may read about the questions."""
    rows = [inputs["row"][int(s)] for s in questions["scene_id"].tolist()]
    return {"question": questions["question"].tolist(),
            "question + caption": [input_text(q, c) for q, c in
                                   zip(questions["question"], questions["caption"], strict=True)],
            "images": inputs["images"][torch.as_tensor(rows, dtype=torch.long)],
            "objects": inputs["objects"][torch.as_tensor(rows, dtype=torch.long)],
            "mask": inputs["mask"][torch.as_tensor(rows, dtype=torch.long)],
            "oracle": questions["target_name"].tolist()}


# the baselines search their questions in chunks of this many: the same chunks in one process
# or several, so a dense encoder pads each query exactly alike and the tables are identical
QUERY_CHUNK = 256


def methods(model, inputs: dict, index, dcfg: DecodeConfig, bm25, dense, clip_dense,
            random_floor, k: int = 10) -> dict[str, Callable[[pd.DataFrame], Run]]:
    """name -> function(questions) -> Run, for GeMKR and every baseline of DESIGN §6."""
    from .distributed import in_batches

    def wrap(name, fn):  # the questions in fixed chunks, shared out under N processes
        def run(q):
            start = time.perf_counter()
            ranked = in_batches(lambda a, b: fn(q.iloc[a:b], query_views(q.iloc[a:b],
                                                                          inputs))[0],
                                len(q), QUERY_CHUNK)
            return Run(name, ranked, time.perf_counter() - start)
        return run

    return {
        "GeMKR": lambda q: gemkr_search(model, inputs, q, index, dcfg),
        "BM25 (question)": wrap("BM25 (question)", lambda q, v: bm25.search(v["question"], k)),
        "BM25 (question + caption)": wrap(
            "BM25 (question + caption)", lambda q, v: bm25.search(v["question + caption"], k)),
        "MiniLM (question)": wrap("MiniLM (question)",
                                  lambda q, v: dense.search(v["question"], k)),
        "MiniLM (question + caption)": wrap(
            "MiniLM (question + caption)", lambda q, v: dense.search(v["question + caption"], k)),
        "CLIP (image)": wrap("CLIP (image)", lambda q, v: clip_dense.search(v["images"], k=k)),
        "CLIP (image + question)": wrap(
            "CLIP (image + question)",
            lambda q, v: clip_dense.search(v["images"], v["question"], k=k)),
        "CLIP (detected crops)": wrap(
            "CLIP (detected crops)",
            lambda q, v: clip_dense.search_crops(v["objects"], v["mask"], k=k)),
        "oracle (object name, BM25)": wrap("oracle (object name, BM25)",
                                           lambda q, v: bm25.search(v["oracle"], k)),
        "random": wrap("random", lambda q, v: random_floor.search(v["question"], k)),
    }


def evaluate_methods(runners: dict, splits: dict[str, pd.DataFrame], texts: dict[int, str],
                     ks: Sequence[int], lowercase: bool = True, latency_sample: int = 20,
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Run every method on every split; (scores, latency table, runs[(split, method)])."""
    scores, speed, runs = [], [], {}
    for split, q in splits.items():
        for name, runner in bar(runners.items(), desc=f"methods on {split}", leave=False):
            run = runner(q)
            runs[(split, name)] = run
            scores.append(score(run, q, texts, ks, lowercase).assign(split=split, method=name))
            if split == next(iter(splits)):  # latency once, on the first split's queries
                lat = latency(lambda i, r=runner, q=q: r(q.iloc[[i]]), len(q), latency_sample,
                              seed)
                speed.append({"method": name, "queries": len(q), "seconds": run.seconds,
                              "qps": run.qps, **lat})
    return pd.concat(scores, ignore_index=True), pd.DataFrame(speed), runs
