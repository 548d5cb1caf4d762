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


def test_variant_problems_catch_variants_that_change_nothing():
    """06's check: a variant equal to the full model, or to another variant, is reported."""
    from types import SimpleNamespace

    from gemkr import ablations
    from gemkr.config import get_config

    cfg = get_config("default")
    base = {"cache_key": "k0", "decode": "D0", "image": True, "text": True,
            "object_features": True, "dual_flow": True, "lora": True, "llm": "llama/576x7",
            "prompt": "q cap", "boxes": "b0"}

    def run(**changes):
        return SimpleNamespace(fingerprint={**base, **changes})

    good = {"full model": run(), "w/o LoRA": run(cache_key="k1", lora=False),
            "plain beams": run(decode="D1"),
            "caption instead of image": run(cache_key="k2", image=False)}
    assert ablations.variant_problems(good, cfg) == []
    bad = dict(good, **{"w/o dual-flow attention": run(cache_key="k3")})  # switch did nothing
    assert any("w/o dual-flow" in p for p in ablations.variant_problems(bad, cfg))
    retrained = dict(good, **{"clue cap 4 tokens": run(cache_key="k9", decode="D2")})
    assert any("clue cap" in p for p in ablations.variant_problems(retrained, cfg))
    twins = dict(good, **{"image only": run(cache_key="k1", lora=False)})  # = w/o LoRA
    assert any("equals" in p for p in ablations.variant_problems(twins, cfg))
    smoke = get_config("smoke")  # smoke always uses exact boxes: that variant is a no-op there
    noop = dict(good, **{"oracle boxes": run()})
    assert ablations.variant_problems(noop, smoke) == []
    assert ablations.variant_problems(noop, cfg) != []
    # a decoding switch that is the profile's own setting decodes as the full model: a no-op
    same = dict(good, **{"free first token": run()})
    assert [p for p in ablations.variant_problems(same, cfg) if "free first" in p]
    paperlike = dataclasses.replace(cfg, clue_first_token="free")  # the paper's decoding
    assert ablations.variant_problems(same, paperlike) == []
    assert {v.name for v in ablations.VARIANTS if v.decode and ablations.no_op(paperlike, v)} == {
        "free first token"}
    assert not [v for v in ablations.VARIANTS if v.decode and ablations.no_op(cfg, v)]


def test_selected_variants_follow_the_config():
    from gemkr import ablations
    from gemkr.config import get_config

    assert ablations.selected(get_config("smoke")) == ablations.VARIANTS
    cfg = get_config("smoke", ablation_variants=("image only", "plain beams"))
    picked = ablations.selected(cfg)
    assert [v.name for v in picked] == ["full model", "image only", "plain beams"]
    with pytest.raises(KeyError, match="no ablation variant"):
        ablations.selected(get_config("smoke", ablation_variants=("w/o everything",)))
