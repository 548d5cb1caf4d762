"""Reading probes (gemkr.probe) on a tiny fixture: candidates, scoring, left padding, and a
probe that a reader passes and a prompt-blind model fails."""

import numpy as np
import pandas as pd
import pytest
import torch

import gemkr
from gemkr import probe
from gemkr.model import build_llm, template_ids
from gemkr.tokenizer import load_tokenizer, specials

NAMES = ["banana", "owl", "bicycle", "harp", "teapot", "ant", "bus", "apple", "violin", "zebra"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2")


def _questions():
    return pd.DataFrame({"scene_id": [1, 2, 3, 4], "qid": [10, 20, 30, 40],
                         "text": ["What is this? a picture of an owl",
                                  "What is it for? a picture of a harp and a bus",
                                  "What is this? a picture", "Where does it live? a picture of "
                                  "a zebra"],
                         "target_name": ["owl", "harp", "ant", "ant"],
                         "gold_pid": [1, 3, 5, 5]})


def test_probe_items_exclude_the_scene_and_its_first_tokens(tok):
    labels = {1: ["owl"], 2: ["harp", "bus"], 4: ["zebra"]}
    q = probe.probe_questions(_questions(), labels, n=10, seed=0)
    assert q["qid"].tolist() == [10, 20, 40], "a caption that names nothing is not probed"
    items = probe.probe_items(q, tok, NAMES, n_distractors=5, seed=0)
    for it, named in zip(items, q["named"], strict=True):
        assert it.named == tuple(dict.fromkeys(probe.first_token(tok, x) for x in named))
        assert len(it.distractors) == 5 and not set(it.distractors) & set(it.named)
        assert len(set(it.distractors)) == 5


def test_named_first_counts_and_chance():
    items = [probe.ProbeItem("a", (3,), (5, 6, 7)), probe.ProbeItem("b", (1, 2), (4, 5))]
    logits = torch.zeros(2, 10)
    logits[0, 3], logits[0, 9] = 2.0, 9.0  # 9 is no candidate: it does not count
    logits[1, 4] = 1.0  # a distractor wins
    share, chance = probe.named_first(logits, items)
    assert share == 0.5 and chance == pytest.approx((1 / 4 + 2 / 4) / 2)


def test_clue_and_gold_probes():
    assert probe.clue_names_object(["Owl: a bird", "harp, x", "cat"],
                                   [["owl"], ["bus", "harp"], ["dog"]]) == pytest.approx(2 / 3)
    q = _questions().assign(named=[["owl"], ["harp", "bus"], [], ["ant"]])
    share, n = probe.gold_top5_named_alone(q, [[9, 1], [3], [5], [1, 2, 3, 4, 6, 5]])
    assert n == 2 and share == 0.5  # qid 10 (gold at rank 2) and qid 40 (gold at rank 6)


def test_llm_next_logits_left_padding_equals_single_prompts(tok):
    torch.manual_seed(0)
    sp = specials(tok)
    cfg = gemkr.get_config("smoke", llm_hidden=32, llm_layers=2, llm_heads=4)
    llm = build_llm(cfg, sp).eval()
    texts = ["What is this? a picture of an owl", "Why? a picture of a harp, a bus and an apple"]
    batched = probe.llm_next_logits(llm, tok, sp.bos, texts)
    after = template_ids(tok, sp.bos)[1]
    for row, text in zip(batched, texts, strict=True):
        ids = torch.tensor([template_ids(tok, sp.bos, text)[0] + after])
        with torch.no_grad():
            alone = llm(input_ids=ids).logits[0, -1]
        assert torch.allclose(row, alone, atol=1e-4)


def test_probe_tells_a_reader_from_a_prompt_blind_model(tok):
    """A 'model' that puts weight on the caption's last object passes; one that ignores the
    prompt (same logits for every question) scores near chance."""
    labels = {i: [NAMES[i % 10], NAMES[(i + 3) % 10]] for i in range(40)}
    q = pd.DataFrame({"scene_id": range(40), "text": [f"q {i}" for i in range(40)]})
    q = probe.probe_questions(q, labels, n=40, seed=0)
    items = probe.probe_items(q, tok, NAMES, n_distractors=5, seed=0)
    reader = torch.zeros(40, len(tok))
    for row, it in zip(reader, items, strict=True):
        row[it.named[-1]] = 1.0
    blind = torch.from_numpy(np.random.default_rng(0).normal(size=len(tok))).float().expand(40, -1)
    assert probe.named_first(reader, items)[0] == 1.0
    share, chance = probe.named_first(blind, items)
    assert chance == pytest.approx(2 / 7)
    sd = (chance * (1 - chance) / len(items)) ** 0.5
    assert abs(share - chance) <= 3 * sd, "a prompt-blind model scores at chance"


def test_a_passage_starts_with_the_token_its_first_word_has_in_a_caption(tok):
    """The index encodes a passage as running text (`word_prefix`): the clue's first token is the
    token the caption uses for the same word, so the LLM can copy it (issue 14). Without the
    prefix SmolLM2's BPE splits "frog" into "f" "rog"."""
    from gemkr.detect import caption
    from gemkr.tokenizer import clue_text, encode_passages

    ids = encode_passages(tok, ["frog, toad: a tailless amphibian"])[0].tolist()
    in_caption = tok(caption(["frog"]), add_special_tokens=False)["input_ids"]
    assert ids[0] == in_caption[-1] == probe.first_token(tok, "frog")
    assert clue_text(tok, ids[:3]) == "frog, toad"


def test_word_prefix_is_empty_for_tokenizers_that_mark_word_starts():
    from gemkr.tokenizer import word_prefix

    class SentencePieceLike:  # LLaMA: "the" -> "▁the" (dummy prefix)
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [7]}

        def convert_ids_to_tokens(self, ids):
            return ["\u2581the"]

    assert word_prefix(SentencePieceLike()) == ""
