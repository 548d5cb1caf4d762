"""Cache keys cover what a stage reads (issue 17): every trained stage records the settings it
reads while training and refuses to save when one lies outside its key."""

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
