"""Constrained diverse beam search: clues are real corpus text; without constraints it equals a
plain, uncached reference beam search; batching and the paper-text rules behave."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from gemkr.decoding import DecodeConfig, beam_search, rank_passages, top_indices
from gemkr.index import CorpusIndex

V, EOS, BOS = 48, 2, 1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, V, size=rng.integers(2, 10)).tolist() for _ in range(60)]
    return docs, CorpusIndex.build(docs, eos=EOS, bos=BOS, vocab_size=V, progress=False)


def _prompt(model, seed, length=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, model.config.hidden_size, generator=g)


def _occurs(clue, doc):
    stored = [BOS, *doc, EOS]
    m = len(clue)
    return any(stored[i:i + m] == list(clue) for i in range(len(stored) - m + 1))


def reference_beam(model, embeds, num_beams, max_len, length_penalty, first=None):
    """Plain beam search recomputing the whole sequence each step (no cache, no groups); the
    first step takes only the tokens in `first` when given."""
    emb = model.get_input_embeddings()
    beams, hyps = [([], 0.0)], []
    for step in range(max_len + 1):
        cands = []
        for toks, score in beams:
            x = torch.cat([embeds, emb(torch.tensor([toks], dtype=torch.long))], dim=1)
            logp = torch.log_softmax(model(inputs_embeds=x).logits[0, -1].float(), -1)
            allowed = [EOS] if step >= max_len else [t for t in range(V) if step or t != EOS]
            if step == 0 and first is not None:
                allowed = [t for t in allowed if t in first]
            cands += [(score + float(logp[t]), toks + [t]) for t in allowed]
        cands.sort(key=lambda c: -c[0])
        new = []
        for rank, (score, toks) in enumerate(cands):
            if toks[-1] == EOS:
                if rank < num_beams:
                    hyps.append((score / len(toks) ** length_penalty, toks))
                continue
            new.append((toks, score))
            if len(new) == num_beams:
                break
        hyps = sorted(hyps, key=lambda h: -h[0])[:num_beams]
        if not new or (len(hyps) == num_beams and
                       hyps[-1][0] >= new[0][1] / (step + 1) ** length_penalty):
            return hyps
        beams = new
    return hyps


@torch.no_grad()
def test_unconstrained_equals_reference_beam_search(model, corpus):
    _, index = corpus
    dcfg = DecodeConfig(num_beams=4, num_beam_groups=1, diversity_penalty=0.0,
                        length_penalty=1.5, max_clue_tokens=4, constrained=False)
    for seed in range(3):
        x = _prompt(model, seed)
        got = beam_search(model, x, torch.ones(1, 5, dtype=torch.long), index, dcfg, EOS)[0]
        ref = reference_beam(model, x, 4, 4, 1.5)
        assert [c.tokens for c in got] == [tuple(t if len(t) <= 4 else t[:-1]) for _, t in ref]
        assert np.allclose([c.score for c in got], [s for s, _ in ref], atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("unique", [False, True])
def test_every_clue_occurs_in_its_passages(model, corpus, unique):
    docs, index = corpus
    dcfg = DecodeConfig(max_clue_tokens=5, min_clue_tokens=2, stop_when_unique=unique,
                        mapping="all")
    for seed in range(4):
        clues = beam_search(model, _prompt(model, seed), torch.ones(1, 5, dtype=torch.long),
                            index, dcfg, EOS)[0]
        # one finished clue per group (10 groups of 1 beam), each a different token sequence
        assert len(clues) == dcfg.num_beam_groups == 10
        assert len({c.tokens for c in clues}) == len(clues)
        scores = [c.score for c in clues]
        assert scores == sorted(scores, reverse=True)
        for c in clues:
            assert c.count > 0 and len(c.docs) > 0, c
            assert all(_occurs(c.tokens, docs[d]) for d in c.docs)
            assert {d for d, doc in enumerate(docs) if _occurs(c.tokens, doc)} == set(c.docs)
            if unique and c.tokens[-1] != EOS and len(c.tokens) < 5:
                assert len(c.docs) == 1, "stopped as soon as the clue was unique"
        ranked = rank_passages(clues)
        assert len(ranked) == len(set(ranked))


@torch.no_grad()
def test_diverse_groups_spread_first_tokens(model, corpus):
    _, index = corpus
    x, m = _prompt(model, 7), torch.ones(1, 5, dtype=torch.long)
    plain = beam_search(model, x, m, index, DecodeConfig(num_beam_groups=1,
                                                         diversity_penalty=0.0), EOS)[0]
    diverse = beam_search(model, x, m, index, DecodeConfig(diversity_penalty=5.0), EOS)[0]
    assert len({c.tokens[0] for c in diverse}) >= len({c.tokens[0] for c in plain})
    assert len({c.tokens[0] for c in diverse}) >= 5


@torch.no_grad()
def test_anchor_start_and_batching(model, corpus):
    docs, index = corpus
    dcfg = DecodeConfig(num_beams=4, num_beam_groups=2, anchor="start", max_clue_tokens=4,
                        mapping="all")
    a, b = _prompt(model, 1, 5), _prompt(model, 2, 3)
    single = [beam_search(model, p, torch.ones(1, p.shape[1], dtype=torch.long), index, dcfg,
                          EOS)[0] for p in (a, b)]
    padded = torch.cat([a, torch.cat([torch.zeros(1, 2, a.shape[2]), b], dim=1)])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    batch = beam_search(model, padded, mask, index, dcfg, EOS)
    for one, many in zip(single, batch, strict=True):
        assert [c.tokens for c in one] == [c.tokens for c in many]
        assert np.allclose([c.score for c in one], [c.score for c in many], atol=1e-4)
    for c in batch[0]:
        assert all(docs[d][: len(c.tokens)] == list(c.tokens[: len(docs[d])]) or
                   list(c.tokens) == docs[d] + [EOS] for d in c.docs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([float("-inf"), -3.0, -1.5, -1.0, 0.0]) | st.floats(-20, 0),
                min_size=0, max_size=60), st.integers(1, 25))
def test_top_indices_matches_stable_argsort(values, n):
    """The partial selection equals the full stable sort it replaces, ties and -inf included."""
    v = np.asarray(values, dtype=np.float64)
    assert top_indices(v, n).tolist() == np.argsort(-v, kind="stable")[:n].tolist()


@torch.no_grad()
def test_first_tokens_equal_the_reference_with_a_narrowed_first_step(model, corpus):
    """Per-query first-token sets: unconstrained, the search equals the brute-force reference
    whose first step may take only those tokens; constrained, every clue opens with one and
    still occurs in its passages; a set the index shares nothing with, an empty set and None
    leave the search as it is; in a batch each query keeps its own set."""
    docs, index = corpus
    free = DecodeConfig(num_beams=4, num_beam_groups=1, diversity_penalty=0.0,
                        length_penalty=1.5, max_clue_tokens=4, constrained=False)
    m = torch.ones(1, 5, dtype=torch.long)
    for seed, first in ((0, [5, 9, 30]), (1, [17]), (2, [3, 4, 40, 41])):
        x = _prompt(model, seed)
        got = beam_search(model, x, m, index, free, EOS, [np.array(first)])[0]
        ref = reference_beam(model, x, 4, 4, 1.5, first=first)
        assert [c.tokens for c in got] == [tuple(t if len(t) <= 4 else t[:-1]) for _, t in ref]
        assert np.allclose([c.score for c in got], [s for s, _ in ref], atol=1e-5)
        assert all(c.tokens[0] in first for c in got)
    dcfg = DecodeConfig(max_clue_tokens=5, min_clue_tokens=2, mapping="all")
    sets = [np.array([7, 11]), np.array([20]), np.array([V + 3]), np.array([], np.int64), None]
    batch = torch.cat([_prompt(model, s) for s in range(len(sets))])
    many = beam_search(model, batch, torch.ones(len(sets), 5, dtype=torch.long), index, dcfg,
                       EOS, sets)
    for q, (clues, first) in enumerate(zip(many, sets, strict=True)):
        alone = beam_search(model, _prompt(model, q), m, index, dcfg, EOS)[0]
        if first is not None and len(first) and first[0] < V:
            assert all(c.tokens[0] in first.tolist() for c in clues)
            assert all(_occurs(c.tokens, docs[d]) for c in clues for d in c.docs)
        else:  # nothing to narrow to: the same clues as a free search
            assert [c.tokens for c in clues] == [c.tokens for c in alone]
    with pytest.raises(ValueError, match="2 sets for 1 queries"):
        beam_search(model, _prompt(model, 0), m, index, dcfg, EOS, [None, None])
    with pytest.raises(ValueError, match="first_token"):
        DecodeConfig(first_token="names")
