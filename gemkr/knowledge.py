"""Stage 2 of notebook 04: the LLM learns the knowledge base and to read its prompt.

Two LLMs go through it. The `default` reader (SmolLM2-135M cut to its first blocks plus its last,
`model.keep_blocks`) reads its prompt at chance right after the cut; stage 2 heals the kept blocks
and the final norm (token embeddings = tied output layer stay pretrained). The in-kit LLaMA
(`smoke`, and 06's LLM-scale row) starts from random weights and trains everything. Both learn
with next-token prediction on KB passages: ``llm_pretrain_context="recall"`` (default) puts each
passage after the instruction template whose input names it among 1-4 other KB entries
(`recall_batches`), so the LLM learns to find a name in its prompt and write that entry's
passage; ``"bos"`` learns plain ``[bos] passage``. The constrained decoder only ever lets a clue
of at most ``clue_max_tokens`` run, so CPU profiles train on the first ``llm_pretrain_tokens``
tokens of each passage (the part clues are made of). `small`/`paper` use their LLM as it is
(``llm_pretrain_epochs=0``). Notebook 04's reading probe (`probe.py`) measures the result.

Why the kit computes this loss itself: the output layer of a small LLM over SmolLM2's 49,152-token
vocabulary is most of its training cost on a CPU, while the KB uses ~16K distinct tokens and the
constrained decoder can never emit any other. `lm_loss_over` takes the softmax over the KB's
tokens only (exactly a model whose output is restricted to them); GeMKR tuning and decoding then
use the full output layer, where the never-trained rows keep their small initial logits.

`verbatim_share` measures what the LLM holds: the share of passages whose next tokens it writes
exactly (greedy, unconstrained) after seeing their first few.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .index import CorpusIndex
from .train import pad_batch


def passage_starts(index: CorpusIndex, numbers, max_tokens: int) -> list[np.ndarray]:
    """The first `max_tokens` token ids of the given passages (index numbers), as stored, with
    the passage's EOS when it ends within them (a cut passage gets none: it does not end there)."""
    eos = np.asarray([index.eos])
    return [np.concatenate([index.passage_tokens(int(n)), eos])[:max_tokens] for n in numbers]


def pretraining_set(index: CorpusIndex, first: list[int], size: int | None, seed: int) -> list[int]:
    """Index numbers of the passages the LLM learns: `first` (the object passages), then a fixed
    random sample of the others up to `size` passages (None = every passage)."""
    first = list(dict.fromkeys(int(n) for n in first))
    rest = np.setdiff1d(np.arange(index.num_docs), first)
    n = len(rest) if size is None else max(0, min(len(rest), size - len(first)))
    extra = np.sort(np.random.default_rng([seed, 4, 2]).choice(rest, size=n, replace=False))
    return first + extra.tolist()


class OutputVocab:
    """The token ids a corpus uses (plus EOS) and the map from full ids to their positions."""

    def __init__(self, docs: list[np.ndarray], eos: int, vocab_size: int):
        ids = np.unique(np.concatenate([*docs, [eos]]).astype(np.int64))
        self.ids = torch.from_numpy(ids)
        self.position = torch.full((vocab_size,), -100, dtype=torch.long)
        self.position[self.ids] = torch.arange(len(ids))


def shared_prefix(batch: dict, min_len: int = 8) -> int:
    """Length of the token prefix every sequence of `batch` shares (real tokens, unlabelled, and
    the token after it unlabelled too), or 0 when shorter than `min_len`: recall sequences all
    open with the same instruction template, which then runs through the LLM once per batch."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    same = (ids == ids[:1]).all(0) & mask.bool().all(0) & (labels == -100).all(0)
    n = int(torch.cumprod(same.long(), 0).sum())
    n = min(n, ids.shape[1] - 2) - 1  # labels[:, n] is predicted by the last shared position
    return n if n >= min_len else 0


def lm_loss_over(llm, batch: dict, vocab: OutputVocab, share: bool = True) -> torch.Tensor:
    """Next-token cross-entropy with the softmax over `vocab` only (tied output rows). A prefix
    shared by every sequence (`shared_prefix`) runs once and its keys/values serve the batch;
    the loss is the same (tested), the cost ~40 % lower for template-led sequences."""
    dev = llm.get_input_embeddings().weight.device
    ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    n = shared_prefix(batch) if share else 0
    cache, position = None, None
    if n:
        cache = llm.model(input_ids=ids[:1, :n], use_cache=True).cache
        cache.batch_repeat_interleave(ids.shape[0])
        position = torch.arange(n, ids.shape[1], device=dev).expand(ids.shape[0], -1)
    hidden = llm.model(input_ids=ids[:, n:], attention_mask=mask, position_ids=position,
                       cache=cache, use_cache=cache is not None).last_hidden_state
    labels = batch["labels"][:, n + 1:].to(dev)
    valid = labels != -100
    target = vocab.position.to(dev)[labels[valid]]
    logits = hidden[:, :-1][valid] @ llm.get_output_embeddings().weight[vocab.ids.to(dev)].T
    return torch.nn.functional.cross_entropy(logits.float(), target)


@torch.no_grad()
def verbatim_share(llm, docs: list[np.ndarray], starts: list[list[int]], given: int = 2,
                   check: int = 6, batch: int = 256) -> float:
    """Share of passages whose next `check` tokens (fewer where the passage start given in
    `docs`, see `passage_starts`, ends sooner) the LLM writes exactly, greedily and without
    constraint, after its context in `starts` (``[bos]``, or the instruction template) and the
    passage's first `given` tokens."""
    items = [([*st, *d[:given].tolist()], d[given:given + check].tolist())
             for d, st in zip(docs, starts, strict=True) if len(d) > given]
    if not items:
        return float("nan")
    was_training = llm.training
    llm.eval()
    dev = llm.get_input_embeddings().weight.device
    hits = 0
    by_len: dict[int, list] = {}
    for item in items:  # equal prompt lengths batch without padding
        by_len.setdefault(len(item[0]), []).append(item)
    for group in by_len.values():
        for s in range(0, len(group), batch):
            chunk = group[s:s + batch]
            ids = torch.tensor([p for p, _ in chunk], device=dev)
            for _ in range(check):
                nxt = llm(input_ids=ids, logits_to_keep=1).logits[:, -1].argmax(-1)
                ids = torch.cat([ids, nxt[:, None]], 1)
            out = ids[:, len(chunk[0][0]):].tolist()
            hits += sum(o[:len(t)] == t for o, (_, t) in zip(out, chunk, strict=True))
    llm.train(was_training)
    return hits / len(items)


def passage_name(text: str) -> str:
    """The first lemma of a ``"lemma, lemma: gloss"`` passage (the name an object goes by)."""
    return text.split(":", 1)[0].split(",", 1)[0].strip()


def recall_batches(docs: list[np.ndarray], names: list[str], tok, bos: int, pad: int,
                   batch_size: int, rng, max_others: int = 3,
                   fillers: list[str] | None = None) -> Iterable[dict]:
    """Shuffled batches of *in-context recall* sequences: the instruction template whose input
    names 1 to 1 + `max_others` KB entries (``"a picture of a teapot and an owl"``), followed by
    the opening of one of those entries' passages. Every passage is the answer once per epoch.
    With `fillers`, a random one (e.g. another passage's gloss) precedes the names, so that the
    recall does not depend on where in the input the names stand.

    This is the kit's CPU stand-in for what a pretrained LLM brings to GeMKR besides knowledge:
    reading a name in the prompt and recalling its passage. It uses KB passages only (no
    question, no image, nothing of the benchmark's splits); which entry the question is about is
    left to GeMKR's instruction tuning. Labels cover the passage tokens only."""
    from .detect import caption
    from .model import template_ids

    order = rng.permutation(len(docs))
    after = template_ids(tok, bos)[1]
    for s in range(0, len(order), batch_size):
        seqs, starts = [], []
        for i in order[s:s + batch_size]:
            others = rng.choice(len(docs), size=rng.integers(0, max_others + 1), replace=False)
            shown = [int(i), *(int(o) for o in others if o != i)]
            rng.shuffle(shown)
            text = caption([names[j] for j in shown])
            if fillers:
                text = f"{fillers[int(rng.integers(len(fillers)))]} {text}"
            before = template_ids(tok, bos, text)[0]
            prompt = before + after
            seqs.append(prompt + docs[i].tolist())
            starts.append(len(prompt))
        yield pad_batch(seqs, starts, pad)


def gloss_fillers(texts: list[str], max_words: int = 10) -> list[str]:
    """Filler inputs for `recall_batches`: the first words of each passage's gloss."""
    return [" ".join(t.split(":", 1)[-1].split()[:max_words]) for t in texts]
