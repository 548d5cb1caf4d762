"""Knowledge-guided constrained (diverse) beam search: the LLM writes clues that exist in the KB.

Why the kit owns this: transformers 5.x moved group (diverse) beam search and constrained beam
search to a Hub repository that fails offline (offline-assets §8), and GeMKR needs both in one
loop. The search follows Hamming-diverse group beam search (Vijayakumar et al., arXiv 1610.02424)
as the official code runs it through transformers 4.28 (paper-notes §11.4, trap T7):

* G groups of B/G beams, processed in turn at every step; a group's candidate scores are the
  beam's running score plus the log-probability, minus ``diversity_penalty`` times how often
  earlier groups picked that token at this step (the penalty stays in the running score).
* Allowed next tokens are the index's continuations of the clue so far (KV cache kept per beam).
* EOS only where the clue ends a passage; at ``max_clue_tokens`` only EOS (official cap: BOS+9).
* Finished hypotheses score ``sum / length ** length_penalty`` with length = tokens + 1 (the BOS
  placeholder of transformers 4.28 counts, trap T4); returned sorted by that score.
* Paper-text rules as switches: ``min_clue_tokens`` and ``stop_when_unique`` (a clue ends as soon
  as it occurs in exactly one passage); ``anchor="start"`` makes clues begin at a passage start.
* The kit's departure, a switch (``first_token="prompt name"``, on in ``default``): a clue's first
  token must open one of the object names its prompt holds (per query, `beam_search`'s
  ``first_tokens``), intersected with what the index allows; where the two share nothing, the
  index's set stands. The paper's only constraint is the index (``first_token="free"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .config import FIRST_TOKEN
from .index import CorpusIndex, State

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodeConfig:
    """Search settings; defaults are the official code's (paper-notes §11.3-11.4)."""

    num_beams: int = 10
    num_beam_groups: int = 10
    diversity_penalty: float = 0.5
    length_penalty: float = 1.5
    max_clue_tokens: int = 9
    min_clue_tokens: int = 1
    stop_when_unique: bool = False
    anchor: str = "anywhere"  # "anywhere" (official) | "start" (clue begins a passage)
    constrained: bool = True
    mapping: str = "first"  # "first" passage of the clue (official) | "all" its passages
    # "free" (official: any token the index allows) | "prompt name": the first token opens a
    # name the prompt holds (the caller gives each query's set, `GeMKR.first_tokens`)
    first_token: str = "free"

    def __post_init__(self) -> None:
        if self.num_beams % self.num_beam_groups:
            raise ValueError("num_beams must be a multiple of num_beam_groups")
        if self.anchor not in ("anywhere", "start") or self.mapping not in ("first", "all"):
            raise ValueError("anchor is 'anywhere' or 'start'; mapping is 'first' or 'all'")
        if self.first_token not in FIRST_TOKEN:
            raise ValueError(f"first_token={self.first_token!r}: choose one of "
                             f"{', '.join(FIRST_TOKEN)}")

    @classmethod
    def from_config(cls, cfg, **changes) -> DecodeConfig:
        """The profile's settings (DESIGN §5 default: the paper text's stop-when-unique rule)."""
        base = dict(num_beams=cfg.num_beams, num_beam_groups=cfg.num_beam_groups,
                    diversity_penalty=cfg.diversity_penalty, length_penalty=cfg.length_penalty,
                    max_clue_tokens=cfg.clue_max_tokens, min_clue_tokens=cfg.min_clue_tokens,
                    stop_when_unique=cfg.stop_when_unique, first_token=cfg.clue_first_token)
        return cls(**(base | changes))


@dataclass
class Clue:
    """A finished hypothesis: its tokens (EOS kept only where it anchors a passage end), the
    length-normalised score, its occurrence count and the passages it maps to."""

    tokens: tuple[int, ...]
    score: float
    count: int = 0
    docs: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class _Beam:
    tokens: list[int]
    state: State | None  # None when unconstrained
    score: float = 0.0


class _Group:
    """Finished hypotheses of one group, scored as transformers 4.28's BeamHypotheses
    (early_stopping=False): ``sum / len ** length_penalty`` where len counts the BOS placeholder
    and the clue tokens but not a final EOS."""

    def __init__(self, size: int, length_penalty: float, eos: int):
        self.size, self.lp, self.eos = size, length_penalty, eos
        self.hyps: list[tuple[float, list[int], State | None]] = []
        self.done = False

    def add(self, tokens: list[int], total: float, state: State | None) -> None:
        length = 1 + len(tokens) - (tokens[-1] == self.eos)
        self.hyps.append((total / length ** self.lp, tokens, state))
        self.hyps.sort(key=lambda h: -h[0])
        del self.hyps[self.size:]

    def is_done(self, best_running: float, cur_len: int) -> bool:
        """No running beam can still beat the worst kept hypothesis (cur_len incl. BOS)."""
        if len(self.hyps) < self.size:
            return False
        return self.hyps[-1][0] >= best_running / cur_len ** self.lp


def _allowed(index: CorpusIndex, beam: _Beam, dcfg: DecodeConfig, eos: int, vocab: int,
             step: int, first: np.ndarray | None = None) -> np.ndarray:
    """Token ids the beam may emit next; at step 0 only those in `first` where it names any
    (the query's prompt-name openings, `first_token="prompt name"`)."""
    if step >= dcfg.max_clue_tokens:
        return np.array([eos])
    if not dcfg.constrained:
        toks = np.arange(vocab)
        toks = toks if step >= dcfg.min_clue_tokens else toks[toks != eos]
    else:
        toks = index.allowed(beam.state)
        if step < dcfg.min_clue_tokens or step == 0:
            toks = toks[toks != eos]
        toks = toks[toks < vocab]
    return opening_tokens(toks, first) if step == 0 else toks


def opening_tokens(allowed: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """The first step's tokens: `allowed` (what the index allows) narrowed to `first` (the
    openings of the names the prompt holds); `allowed` itself where `first` is None or the two
    share nothing (a prompt with no name, or names the knowledge base never starts a word with)."""
    if first is None or not len(first):
        return allowed
    keep = allowed[np.isin(allowed, first)]
    return keep if len(keep) else allowed


def top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest values, best first, ties by lower index: the same as
    ``np.argsort(-values, kind="stable")[:n]`` in O(len) rather than O(len log len). At the first
    step of an unanchored clue every KB token is allowed, and the full sort was 40 % of decoding."""
    if len(values) <= n:
        return np.argsort(-values, kind="stable")
    cut = np.partition(values, len(values) - n)[len(values) - n]  # the n-th largest value
    above = np.flatnonzero(values > cut)
    ties = np.flatnonzero(values == cut)[: n - len(above)]
    sel = np.sort(np.concatenate([above, ties]))
    return sel[np.argsort(-values[sel], kind="stable")]


def _group_step(index: CorpusIndex, dcfg: DecodeConfig, eos: int, step: int, grp: _Group,
                beams: list[_Beam], logp: np.ndarray, picked: np.ndarray,
                first: np.ndarray | None = None) -> list[tuple]:
    """One step of one beam group: score the allowed continuations of its beams (Hamming
    penalty against tokens `picked` by earlier groups), let finished candidates enter the group's
    hypotheses and return the ``k`` continuing ones as (score, beam slot, token, state)."""
    k, vocab = len(beams), logp.shape[-1]
    cand = []
    for j, beam in enumerate(beams):
        if beam.score == NEG_INF:
            continue
        allowed = _allowed(index, beam, dcfg, eos, vocab, step, first)
        lp = logp[j, allowed] - dcfg.diversity_penalty * picked[allowed]
        top = top_indices(lp, 2 * k)
        cand += [(beam.score + float(lp[i]), j, int(allowed[i])) for i in top]
    cand.sort(key=lambda c: -c[0])
    chosen: list[tuple[float, int, int, State | None]] = []
    for rank, (score, j, tok) in enumerate(cand):
        src = beams[j]
        state = index.extend(src.state, tok) if src.state is not None else None
        finish = tok == eos or (dcfg.stop_when_unique and state is not None and
                                len(src.tokens) + 1 >= dcfg.min_clue_tokens and
                                index.is_unique(state))
        if finish:
            if rank < k:  # HF: only top-k ranked candidates may finish
                grp.add(src.tokens + [tok], score, state)
            continue
        chosen.append((score, j, tok, state))
        if len(chosen) == k:
            break
    best = max((c[0] for c in chosen), default=NEG_INF)
    grp.done = grp.is_done(best, step + 1) or not chosen
    return chosen


@torch.no_grad()
def beam_search(model, prompt_embeds: torch.Tensor, attention_mask: torch.Tensor,
                index: CorpusIndex, dcfg: DecodeConfig, eos: int,
                first_tokens: list[np.ndarray | None] | None = None) -> list[list[Clue]]:
    """Constrained diverse beam search for a batch of prompts given as embeddings.

    prompt_embeds: (Q, L, H) float, left-padded; attention_mask: (Q, L) 0/1. `first_tokens`: per
    query, the token ids a clue may open with (`opening_tokens`; None = any the index allows).
    Returns per query the finished clues sorted by score (at most ``num_beams``), EOS stripped
    unless it anchors.
    """
    Q, B, G = prompt_embeds.shape[0], dcfg.num_beams, dcfg.num_beam_groups
    k = B // G
    if first_tokens is not None and len(first_tokens) != Q:
        raise ValueError(f"first_tokens holds {len(first_tokens)} sets for {Q} queries")
    root = None
    if dcfg.constrained:
        root = index.root() if dcfg.anchor == "anywhere" else index.state([index.bos])
        if dcfg.anchor == "start" and index.bos is None:
            raise ValueError("anchor='start' needs an index built with a BOS token")
    position = attention_mask.long().cumsum(-1) - 1
    out = model(inputs_embeds=prompt_embeds, attention_mask=attention_mask,
                position_ids=position.clamp(min=0), use_cache=True, logits_to_keep=1)
    cache = out.cache
    cache.batch_repeat_interleave(B)
    logits = out.logits[:, -1].float().repeat_interleave(B, dim=0)  # (rows, V), rows = `live`
    last_pos = position[:, -1]
    vocab = logits.shape[-1]
    # Only rows of beams that can still grow run through the LLM: a row leaves the batch once its
    # beam is dead or its group is done (the KV cache shrinks with it). Clues stop when unique,
    # so most rows finish long before the cap; this makes decoding ~2x faster and is exact.
    live = np.arange(Q * B)  # global row (q * B + slot) of each row of `logits` / `cache`
    # only group 0's first beam starts "alive" per group (HF: other beams start at -1e9)
    beams = [[_Beam([], root, 0.0 if j % k == 0 else -1e9) for j in range(B)] for _ in range(Q)]
    groups = [[_Group(k, dcfg.length_penalty, eos) for _ in range(G)] for _ in range(Q)]
    for step in range(dcfg.max_clue_tokens + 1):
        logp_live = torch.log_softmax(logits, dim=-1).cpu().numpy()
        logp = np.zeros((Q * B, vocab), logp_live.dtype)  # rows not in `live` are never read
        logp[live] = logp_live
        position_of = np.full(Q * B, -1)
        position_of[live] = np.arange(len(live))
        next_tokens = np.full(Q * B, eos)
        reorder = np.arange(Q * B)  # global source row of each global row
        for q in range(Q):
            picked = np.zeros(vocab)  # tokens chosen by earlier groups at this step
            for g in range(G):
                grp = groups[q][g]
                if grp.done:
                    continue
                rows = range(g * k, (g + 1) * k)
                chosen = _group_step(index, dcfg, eos, step, grp, [beams[q][j] for j in rows],
                                     logp[q * B + g * k:q * B + (g + 1) * k], picked,
                                     None if first_tokens is None else first_tokens[q])
                new = [_Beam(beams[q][g * k + j].tokens + [tok], st, sc)
                       for sc, j, tok, st in chosen]
                new += [_Beam([], None, NEG_INF)] * (k - len(new))
                for slot, (row, beam) in enumerate(zip(rows, new, strict=True)):
                    beams[q][row] = beam
                    if slot < len(chosen):  # the KV cache row follows its source beam
                        reorder[q * B + row] = q * B + g * k + chosen[slot][1]
                        next_tokens[q * B + row] = chosen[slot][2]
                        picked[chosen[slot][2]] += 1
        if all(grp.done for gs in groups for grp in gs) or step == dcfg.max_clue_tokens:
            break
        live = np.array([r for r in range(Q * B) if not groups[r // B][(r % B) // k].done
                         and beams[r // B][r % B].score != NEG_INF], dtype=np.int64)
        src = position_of[reorder[live]]
        cache.reorder_cache(torch.as_tensor(src, device=logits.device))
        query = torch.as_tensor(live // B, device=logits.device)
        mask = torch.cat([attention_mask[query], attention_mask.new_ones(len(live), step + 1)],
                         dim=-1)
        embeds = model.get_input_embeddings()(torch.as_tensor(next_tokens[live],
                                                              device=logits.device))
        out = model(inputs_embeds=embeds[:, None], attention_mask=mask,
                    position_ids=(last_pos[query] + step + 1)[:, None], cache=cache,
                    use_cache=True)
        cache, logits = out.cache, out.logits[:, -1].float()
    return [_finalize(index, groups[q], beams[q], dcfg, eos) for q in range(Q)]


def _finalize(index: CorpusIndex, groups: list[_Group], beams: list[_Beam], dcfg: DecodeConfig,
              eos: int) -> list[Clue]:
    k = dcfg.num_beams // dcfg.num_beam_groups
    for g, grp in enumerate(groups):  # running beams of unfinished groups count as hypotheses
        if not grp.done:
            for beam in beams[g * k:(g + 1) * k]:
                if beam.score != NEG_INF and beam.tokens:
                    grp.add(beam.tokens, beam.score, beam.state)
    hyps = sorted((h for grp in groups for h in grp.hyps), key=lambda h: -h[0])
    clues = []
    for score, tokens, _ in hyps[: dcfg.num_beams]:
        # EOS before the cap was chosen where the clue ends a passage: it anchors there; the
        # EOS forced at the cap is dropped (official code's cut at the last EOS)
        anchored = tokens[-1] == eos and len(tokens) <= dcfg.max_clue_tokens
        key = tuple(tokens if anchored else [t for t in tokens if t != eos])
        clues.append(map_clue(index, key, score, dcfg))
    return clues


def map_clue(index: CorpusIndex, key: tuple[int, ...], score: float,
             dcfg: DecodeConfig) -> Clue:
    """Look a clue up in the index: its count and passages (first or all, see `mapping`)."""
    prefix = [index.bos] if dcfg.anchor == "start" and index.bos is not None else []
    state = index.state(prefix + list(key))
    if state.depth < len(prefix) + len(key) or state.count == 0:
        return Clue(key, score)
    docs = index.state_docs(state)
    if dcfg.mapping == "first":  # official: the first row of the index range
        docs = first_doc(index, state)
    return Clue(key, score, state.count, docs)


def first_doc(index: CorpusIndex, state: State) -> np.ndarray:
    """Passage of the first suffix-array row of the clue's interval (arbitrary among its
    passages, as the official code's ``get_doc_indices(...)[0]``)."""
    for shard, (lo, hi) in zip(index.shards, state.spans, strict=True):
        if hi > lo:
            return index.ids[shard.doc_ids((lo, lo + 1))]
    return np.empty(0, np.int64)


def clue_hits(clues: list[Clue]) -> dict[int, Clue]:
    """Passage -> the first clue that found it, in clue order (passages of one clue in the
    order the index returns them): the one ranking of GeMKR's retrieval, for the notebooks'
    evaluation (`rank_passages`) and for single queries (`Retriever`)."""
    hits: dict[int, Clue] = {}
    for c in clues:
        for d in c.docs.tolist():
            hits.setdefault(int(d), c)
    return hits


def rank_passages(clues: list[Clue]) -> list[int]:
    """The retrieval: passages of the clues in clue order, de-duplicated keeping the first."""
    return list(clue_hits(clues))

