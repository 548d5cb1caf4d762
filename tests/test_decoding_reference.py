"""`decoding.beam_search` against a brute-force reference (issue 17): constrained diverse beam
search written plainly, for one query at a time, with no KV cache, no FM-index (allowed tokens and
passages by scanning every stored passage) and no batching. A toy LM gives exact, random
logits as a pure function of (prompt, tokens so far), so clues and scores must match exactly:
the Hamming penalty group by group, the stop rules (min length, stop-when-unique, the cap), the
length penalty, the final ordering and the passage mapping, over random small corpora, with
queries of different prompt lengths decoded as one left-padded batch."""

import hashlib

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemkr.decoding import DecodeConfig, beam_search
from gemkr.index import CorpusIndex

V, EOS, BOS, EXTRA = 24, 2, 1, 4
NEG_INF = float("-inf")


class _Cache:
    """Per-row token history; what `beam_search` asks of a KV cache."""

    def __init__(self, rows):
        self.rows = rows

    def batch_repeat_interleave(self, n):
        self.rows = [r for r in self.rows for _ in range(n)]

    def reorder_cache(self, idx):
        self.rows = [self.rows[i] for i in idx.tolist()]


class _Out:
    def __init__(self, logits, cache):
        self.logits, self.cache = logits, cache


class ToyLM(torch.nn.Module):
    """Logits = a seeded random draw keyed by the row's prompt and generated tokens. Token
    embeddings are one-hot in the first V dims; prompt embeddings live in the last EXTRA dims."""

    def __init__(self, seed: int, scale: float):
        super().__init__()
        self.seed, self.scale = seed, scale
        self.emb = torch.nn.Embedding(V, V + EXTRA)
        with torch.no_grad():
            self.emb.weight.zero_()
            self.emb.weight[:, :V] = torch.eye(V)

    def get_input_embeddings(self):
        return self.emb

    def _logits(self, key) -> torch.Tensor:
        digest = hashlib.sha256(repr((self.seed, key)).encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return torch.tensor(rng.normal(size=V) * self.scale, dtype=torch.float32)

    @staticmethod
    def _read(x, mask):
        """(prompt key, generated tokens) of one row of embeddings."""
        prompt, tokens = [], []
        for vec, m in zip(x, mask, strict=True):
            if not m:
                continue
            if vec[:V].abs().sum() > 0:
                tokens.append(int(vec[:V].argmax()))
            else:
                prompt.append(tuple(np.round(vec[V:].numpy(), 4).tolist()))
        return tuple(prompt), tokens

    def forward(self, inputs_embeds, attention_mask=None, cache=None, **_):
        n, length = inputs_embeds.shape[:2]
        mask = attention_mask[:, -length:] if attention_mask is not None else \
            torch.ones(n, length, dtype=torch.long)
        if cache is None:
            rows = [self._read(inputs_embeds[i], mask[i]) for i in range(n)]
        else:  # one new token per row, appended to that row's history
            assert len(cache.rows) == n, "the cache follows the rows of the batch"
            rows = [(p, t + [int(inputs_embeds[i, 0, :V].argmax())])
                    for i, (p, t) in enumerate(cache.rows)]
        logits = torch.stack([self._logits((p, tuple(t))) for p, t in rows])[:, None]
        return _Out(logits, _Cache(rows))


# ---- the reference ------------------------------------------------------------------------------

def _stored(docs):
    return [[BOS, *d, EOS] for d in docs]


def _docs_with(stored, clue):
    m = len(clue)
    return [i for i, s in enumerate(stored) if any(s[j:j + m] == clue
                                                    for j in range(len(s) - m + 1))]


def _next_tokens(stored, clue):
    m = len(clue)
    return sorted({s[j + m] for s in stored for j in range(len(s) - m)
                   if s[j:j + m] == clue})


@torch.no_grad()
def reference(model, prompt, stored, dcfg):
    """Constrained diverse beam search for one prompt (1, L, H), plainly."""
    k = dcfg.num_beams // dcfg.num_beam_groups
    lp_len = dcfg.length_penalty

    def logp_of(tokens):
        x = torch.cat([prompt, model.emb(torch.tensor([tokens], dtype=torch.long))], dim=1)
        return torch.log_softmax(model(inputs_embeds=x).logits[0, -1], -1).numpy()

    groups = [{"beams": [([], 0.0 if j == 0 else -1e9) for j in range(k)], "hyps": [],
               "done": False} for _ in range(dcfg.num_beam_groups)]

    def add(grp, tokens, total):
        length = 1 + len(tokens) - (tokens[-1] == EOS)
        grp["hyps"] = sorted(grp["hyps"] + [(total / length ** lp_len, tokens)],
                             key=lambda h: -h[0])[:k]

    for step in range(dcfg.max_clue_tokens + 1):
        picked = np.zeros(V)
        for grp in groups:
            if grp["done"]:
                continue
            cands = []
            for j, (tokens, score) in enumerate(grp["beams"]):
                if score == NEG_INF:
                    continue
                if step >= dcfg.max_clue_tokens:
                    allowed = [EOS]
                else:
                    allowed = _next_tokens(stored, tokens)
                    if step == 0 or step < dcfg.min_clue_tokens:
                        allowed = [t for t in allowed if t != EOS]
                lp = logp_of(tokens)
                mine = sorted(((score + lp[t] - dcfg.diversity_penalty * picked[t], i, t)
                               for i, t in enumerate(allowed)), key=lambda c: (-c[0], c[1]))
                cands += [(s, j, t) for s, _, t in mine[: 2 * k]]
            cands.sort(key=lambda c: -c[0])
            chosen = []
            for rank, (score, j, t) in enumerate(cands):
                tokens = grp["beams"][j][0] + [t]
                unique = len(_docs_with(stored, tokens)) == 1
                if t == EOS or (dcfg.stop_when_unique and len(tokens) >= dcfg.min_clue_tokens
                                and unique):
                    if rank < k:
                        add(grp, tokens, score)
                    continue
                chosen.append((tokens, score))
                if len(chosen) == k:
                    break
            for tokens, _ in chosen:
                picked[tokens[-1]] += 1
            best = max((s for _, s in chosen), default=NEG_INF)
            full = len(grp["hyps"]) >= k
            grp["done"] = not chosen or (full and grp["hyps"][-1][0] >= best / (step + 1)
                                         ** lp_len)
            grp["beams"] = chosen + [([], NEG_INF)] * (k - len(chosen))
        if all(g["done"] for g in groups):
            break
    for grp in groups:  # running beams of unfinished groups count as hypotheses
        if not grp["done"]:
            for tokens, score in grp["beams"]:
                if score != NEG_INF and tokens:
                    add(grp, tokens, score)
    hyps = sorted((h for g in groups for h in g["hyps"]), key=lambda h: -h[0])
    out = []
    for score, tokens in hyps[: dcfg.num_beams]:
        anchored = tokens[-1] == EOS and len(tokens) <= dcfg.max_clue_tokens
        key = tokens if anchored else [t for t in tokens if t != EOS]
        out.append((tuple(key), score, _docs_with(stored, key)))
    return out


# ---- the property -------------------------------------------------------------------------------

@st.composite
def cases(draw):
    n_docs = draw(st.integers(3, 12))
    docs = [draw(st.lists(st.integers(3, V - 1), min_size=1, max_size=7)) for _ in range(n_docs)]
    groups = draw(st.sampled_from([1, 2, 4]))
    dcfg = DecodeConfig(num_beams=groups * draw(st.sampled_from([1, 2])), num_beam_groups=groups,
                        diversity_penalty=draw(st.sampled_from([0.0, 0.5, 3.0])),
                        length_penalty=draw(st.sampled_from([0.0, 1.0, 1.5])),
                        max_clue_tokens=draw(st.integers(1, 5)),
                        min_clue_tokens=draw(st.integers(1, 3)),
                        stop_when_unique=draw(st.booleans()), mapping="all")
    lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    return docs, dcfg, lengths, draw(st.integers(0, 10_000)), draw(st.sampled_from([1.0, 4.0]))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_beam_search_matches_brute_force_reference(case):
    docs, dcfg, lengths, seed, scale = case
    model = ToyLM(seed, scale)
    index = CorpusIndex.build(docs, eos=EOS, bos=BOS, vocab_size=V, progress=False)
    stored = _stored(docs)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.cat([torch.zeros(1, n, V), torch.randn(1, n, EXTRA, generator=g)], -1)
               for n in lengths]
    width = max(lengths)
    batch = torch.cat([torch.cat([torch.zeros(1, width - p.shape[1], V + EXTRA), p], 1)
                       for p in prompts])
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    got = beam_search(model, batch, mask, index, dcfg, EOS)
    for q, prompt in enumerate(prompts):
        ref = reference(model, prompt, stored, dcfg)
        assert [c.tokens for c in got[q]] == [r[0] for r in ref]
        assert np.allclose([c.score for c in got[q]], [r[1] for r in ref], rtol=0, atol=1e-6)
        assert [sorted(c.docs.tolist()) for c in got[q]] == [r[2] for r in ref]
