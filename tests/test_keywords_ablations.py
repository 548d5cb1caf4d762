"""Keyword classification (notebook 07) and the ablation variants (notebook 06)."""

import dataclasses

import pandas as pd
import pytest

import gemkr
from gemkr import ablations, keywords
from gemkr.decoding import DecodeConfig


def test_content_words_drop_stopwords_and_short_words():
    assert keywords.content_words("The Teapot: a pot for brewing tea!") == [
        "teapot", "pot", "brewing", "tea"]


@pytest.fixture(scope="module")
def classifier():
    return keywords.Classifier()


@pytest.mark.parametrize(("word", "kind"), [
    ("teapot", "visible object"), ("dog", "other physical thing"),
    ("happiness", "abstract / conceptual"), ("quickly", "not a noun")])
def test_keyword_kinds_follow_the_wordnet_hierarchy(classifier, word, kind):
    assert classifier.kind(word, visible={"teapot"}) == kind


def test_frequencies_and_overlap_by_hand(classifier):
    clues = pd.DataFrame({"modality": ["text", "text", "image"], "qid": [1, 2, 1],
                          "scene_id": [7, 7, 7],
                          "clue": ["teapot: pot", "teapot", "owl: bird"]})
    words = keywords.keyword_table(clues, {7: {"teapot"}}, classifier)
    assert words.groupby("modality").size().to_dict() == {"image": 2, "text": 3}
    top = keywords.frequencies(words, 1)
    assert top.set_index("modality").loc["text", "word"] == "teapot"
    assert top.set_index("modality").loc["text", "share"] == pytest.approx(2 / 3)
    ov = keywords.overlap(words, 5).iloc[0]
    assert ov["jaccard_all"] == 0.0  # {teapot, pot} vs {owl, bird}


def test_every_variant_is_a_valid_switch():
    cfg = gemkr.get_config("smoke")
    names = [v.name for v in ablations.VARIANTS]
    assert len(set(names)) == len(names) and names[0] == "full model"
    assert len({ablations.slug(n) for n in names}) == len(names)
    decode_fields = {f.name for f in dataclasses.fields(DecodeConfig)}
    for v in ablations.VARIANTS:
        vcfg = ablations.variant_config(cfg, v)  # raises on an unknown config field
        assert vcfg.epochs == cfg.ablation_epochs
        assert set(v.decode) <= decode_fields
        DecodeConfig.from_config(cfg, **v.decode)
        gemkr.get_config("smoke", **v.train)  # type-checked like a user override
    assert set(ablations.table().columns) == {"variant", "group", "what", "switches"}
