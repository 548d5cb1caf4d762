"""Cache keys cover what a stage reads (issues 17 and 26): every trained stage records the
settings it reads while training and refuses to save when one lies outside its key; a load (a
cache hit), the pipeline and a single query are held to the same rule, and a hit is checked
against the settings it was stored for."""

import json

import pytest

from gemkr import trained
from gemkr.config import get_config, recorded_reads


def test_reads_are_recorded_on_every_config_instance():
    a, b = get_config("smoke"), get_config("default")
    with recorded_reads() as seen:
        _ = a.lr, b.epochs
    _ = a.batch_size  # outside the block: not recorded
    assert seen == {"lr", "epochs"}


def test_a_stage_that_reads_an_undeclared_setting_cannot_save():
    @trained.keyed_by(("lr",))
    def stage(cfg):
        _ = cfg.lr, cfg.epochs
        trained._save(None, None, {})  # the check runs before anything is written

    with pytest.raises(trained.CacheKeyError, match=r"\['epochs'\]"):
        stage(get_config("smoke"))

    @trained.keyed_by(("lr",), also=("epochs",))
    def declared(cfg):
        _ = cfg.lr, cfg.epochs, cfg.seed  # seed: in every key
        trained._check_reads()
        return "saved"

    assert declared(get_config("smoke")) == "saved"


def test_the_stages_declare_every_setting_they_read():
    """The three trained stages as declared: the settings their code reads (the functions that
    build and train each part) all lie inside their keys."""
    import dataclasses

    cfg = get_config("smoke")
    from gemkr.model import add_lora, build_llm
    from gemkr.tokenizer import load_tokenizer, specials

    sp = specials(load_tokenizer(cfg.tokenizer))
    with recorded_reads() as seen:
        llm = build_llm(cfg, sp)
        add_lora(llm, cfg)
    assert seen <= set(trained.LLM_FIELDS) | set(trained.GEMKR_FIELDS) | set(trained.IN_EVERY_KEY)
    assert {f.name for f in dataclasses.fields(cfg)} >= set(trained.GEMKR_FIELDS)


def test_a_cache_hit_that_reads_an_undeclared_setting_fails_too():
    """The loading path of a stage (no `_save`) is checked when the stage returns."""
    @trained.keyed_by(("lr",))
    def stage(cfg):
        _ = cfg.lr, cfg.epochs
        return "loaded"

    with pytest.raises(trained.CacheKeyError, match=r"stage read \['epochs'\]"):
        stage(get_config("smoke"))


def test_a_hit_stored_for_other_settings_is_named(tmp_path, monkeypatch):
    """The key is a short hash of settings, upstream keys and data hashes; `_save` stores them
    beside it, and a hit whose stored parts differ from the ones in use is refused by name."""
    monkeypatch.setattr(trained, "artifacts_dir", lambda profile, stage: tmp_path)
    cfg = get_config("smoke")
    cache = trained._cache(cfg, "x", ("upstream", {"lr": 0.1, "epochs": 3}), ("train.py",), False)
    assert not trained._hit(cache)
    with cache.writing(key_parts=cache.key_parts):
        pass
    assert trained._hit(cache)
    meta = json.loads((cache.path / "_meta.json").read_text())
    meta["key_parts"][1]["lr"] = 0.2
    (cache.path / "_meta.json").write_text(json.dumps(meta))
    with pytest.raises(trained.CacheKeyError, match=r"lr: stored 0.2, now 0.1"):
        trained._hit(cache)
    del meta["key_parts"]
    (cache.path / "_meta.json").write_text(json.dumps(meta))
    with pytest.raises(trained.CacheKeyError, match="no record of them"):
        trained._hit(cache)


def test_loading_the_pipeline_reads_only_what_its_keys_cover(monkeypatch, smoke_stages):
    """`pipeline` (what notebooks 05-09 and the retriever load) is checked like a stage: reading
    a setting that no key covers, anywhere inside it, fails."""
    smoke_stages("01", "02", "03", "04")
    cfg = get_config("smoke")
    with recorded_reads() as seen:
        trained.pipeline(cfg)
    assert seen <= set(trained.PIPELINE_FIELDS) | set(trained.IN_EVERY_KEY)
    subset = trained.train_subset

    def reads_more(questions, n, seed):  # a new setting read where the tuning data is chosen
        _ = cfg.max_eval_queries
        return subset(questions, n, seed)

    monkeypatch.setattr(trained, "train_subset", reads_more)
    with pytest.raises(trained.CacheKeyError, match=r"pipeline read \['max_eval_queries'\]"):
        trained.pipeline(cfg)
