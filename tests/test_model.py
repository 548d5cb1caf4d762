"""GeMKR end to end on a handful of items: pixels -> visual tokens -> LLM (frozen + LoRA) ->
constrained decoding -> the gold passage. Also the trainable-parameter count in closed form."""

import numpy as np
import pytest
import torch

import gemkr
from gemkr import train
from gemkr.clues import target_clue
from gemkr.decoding import DecodeConfig, rank_passages
from gemkr.index import CorpusIndex
from gemkr.model import Batch, GeMKR, add_lora, build_llm
from gemkr.tokenizer import load_tokenizer, specials
from gemkr.vision import PrefixViT, VisualTokens, create_clip

PASSAGES = ["banana: elongated crescent-shaped yellow fruit with soft sweet flesh",
            "banana tree: treelike herb bearing hanging clusters of elongated fruits",
            "apple: fruit with red or yellow or green skin and crisp whitish flesh",
            "bicycle: a wheeled vehicle that has two wheels and is moved by foot pedals",
            "bus: a vehicle carrying many passengers; used for public transport",
            "owl: nocturnal bird of prey with hawk-like beak and claws",
            "ant: social insect living in organized colonies",
            "harp: a chordophone that has a triangular frame"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    cfg = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4,
                           vit_layers=2, llm_hidden=32, llm_layers=2, llm_heads=4)
    tok = load_tokenizer("smollm2")
    sp = specials(tok)
    clip, _ = create_clip(cfg, tmp_path_factory.mktemp("oc"))
    docs = [np.asarray(tok(p, add_special_tokens=False)["input_ids"]) for p in PASSAGES]
    llm = build_llm(cfg, sp)  # stage 2 of notebook 04: the LLM learns the passages first
    rng = np.random.default_rng(0)
    pre = train.fit(llm, train.lm_loss, lambda e: train.lm_batches(docs, 8, rng, sp.bos, sp.eos,
                                                                      sp.pad),
                    epochs=120, steps_per_epoch=1, lr=1e-2, min_lr=1e-3, warmup_steps=5,
                    weight_decay=0.0)
    assert pre["history"][-1] < 0.5, "the LLM memorised its knowledge base"
    llm = add_lora(llm, cfg)  # stage 3: frozen LLM + LoRA
    index = CorpusIndex.build(docs, eos=sp.eos, bos=sp.bos, vocab_size=sp.vocab_size,
                              ids=np.arange(100, 100 + len(docs)), progress=False)
    model = GeMKR(PrefixViT(clip.visual, prefix_len=cfg.prefix_len),
                  VisualTokens(cfg.vit_width, cfg.llm_hidden), llm, tok, sp)
    return cfg, model, index, docs


def test_trainable_parameters_match_closed_form(setup):
    cfg, model, _, _ = setup
    counts = model.trainable_parameters()
    h, r, w = cfg.llm_hidden, cfg.lora_r, cfg.vit_width
    assert counts["lora"] == cfg.llm_layers * 2 * (h * r + r * h)  # q_proj and v_proj
    assert counts["projection"] == w * h + h
    assert counts["prefix_rows"] == 1 * cfg.prefix_len * w  # last half of 2 blocks
    assert counts["gates"] == 1 * cfg.vit_heads and counts["other"] == 0


def test_overfit_then_retrieve_gold_passages(setup):
    cfg, model, index, docs = setup
    g = torch.Generator().manual_seed(1)
    gold = [0, 3, 5, 6]
    targets = [list(target_clue(index, docs[i], max_tokens=9).tokens) for i in gold]
    batch = Batch(images=torch.randn(4, 3, 32, 32, generator=g),
                  objects=torch.randn(4, 2, 32, generator=g),
                  mask=torch.tensor([[True, False]] * 4),
                  texts=["What is this used for? a picture"] * 4, targets=targets)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    out = train.fit(model, lambda m, b: m(b), lambda epoch: [batch] * 60, epochs=4,
                    steps_per_epoch=60, lr=2e-2, min_lr=1e-3, warmup_steps=5,
                    weight_decay=0.0)
    assert out["history"][-1] < 0.1 * out["history"][0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters()
               if not p.requires_grad), "base weights unchanged"
    dcfg = DecodeConfig(num_beams=4, num_beam_groups=4, max_clue_tokens=9, stop_when_unique=True)
    clues = model.retrieve(batch, index, dcfg)
    for i, found in zip(gold, clues, strict=True):
        assert rank_passages(found)[0] == 100 + i, [c.tokens for c in found]


def test_checkpoint_roundtrip_and_resume(setup, tmp_path):
    cfg, model, index, docs = setup
    batch = Batch(images=torch.zeros(1, 3, 32, 32), objects=torch.zeros(1, 1, 32),
                  mask=torch.tensor([[False]]), texts=["?"], targets=[[int(docs[1][0])]])
    kw = dict(steps_per_epoch=2, lr=1e-3, min_lr=1e-4, warmup_steps=1, weight_decay=0.05,
              ckpt_dir=tmp_path / "ck")
    first = train.fit(model, lambda m, b: m(b), lambda e: [batch] * 2, epochs=1, **kw)
    again = train.fit(model, lambda m, b: m(b), lambda e: [batch] * 2, epochs=2, **kw)
    assert first["resumed_from_epoch"] == 0 and again["resumed_from_epoch"] == 1
    assert len(again["history"]) == 4
    state = train.load_checkpoint(tmp_path / "ck", model)
    assert state["epoch"] == 2


def test_trace_of_a_clue_shrinks_to_its_passages(setup):
    from gemkr import explore
    from gemkr.tokenizer import load_tokenizer

    cfg, model, index, docs = setup
    tok = load_tokenizer("smollm2")
    batch = Batch(images=torch.zeros(1, 3, 32, 32), objects=torch.zeros(1, 1, 32),
                  mask=torch.tensor([[False]]), texts=["What is this?"])
    clue = list(target_clue(index, docs[3], max_tokens=9).tokens)
    steps = explore.trace(model, batch, index, clue, tok)
    assert len(steps) == len(clue) + 1 and steps["passages"].is_monotonic_decreasing
    assert steps["passages"].iloc[-1] == 1 and (steps["allowed tokens"] > 0).all()
    assert steps["taken"].iloc[-1] == "(end)"


def test_shared_opening_gives_the_same_loss_and_gradients(setup):
    """forward() runs the template's opening once per batch; loss and LoRA gradients must equal
    those of the plain left-padded batch (mixed lengths)."""
    cfg, model, _, docs = setup
    model.train()
    model.llm.eval()  # no LoRA dropout: both passes see the same function
    torch.manual_seed(0)
    s = cfg.vit_image_size
    batch = Batch(torch.randn(3, 3, s, s), torch.randn(3, 2, cfg.vit_width),
                  torch.tensor([[True, True], [True, False], [False, False]]),
                  ["What is this? a picture of a banana",
                   "Which vehicle is on the left? a picture of a bus and a bicycle", "Hm?"],
                  [docs[0][:4].tolist(), docs[4][:2].tolist(), docs[5][:6].tolist()])
    assert model.shared_opening(batch) is not None
    grads = []
    for share in (True, False):
        model.zero_grad()
        loss = model(batch, share_opening=share)
        loss.backward()
        grads.append((float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()
                                    if p.requires_grad and p.grad is not None}))
    assert abs(grads[0][0] - grads[1][0]) < 1e-4
    assert grads[0][1].keys() == grads[1][1].keys() and grads[0][1]
    for name, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][name], atol=1e-4, rtol=1e-3), name
    model.eval()


def test_forward_equals_plain_cross_entropy_per_item(setup):
    """forward()'s `logits_to_keep` slicing and left padding (issue 17): the batch loss equals the
    token-weighted mean of a plain cross-entropy over full logits of each item run alone."""
    cfg, model, _, docs = setup
    model.eval()
    torch.manual_seed(1)
    s = cfg.vit_image_size
    texts = ["What is this? a picture of a banana", "Hm?",
             "Which vehicle is on the left of the big tree? a picture of a bus and a bicycle"]
    targets = [docs[0][:2].tolist(), docs[4][:7].tolist(), docs[5][:4].tolist()]
    batch = Batch(torch.randn(3, 3, s, s), torch.randn(3, 2, cfg.vit_width),
                  torch.tensor([[True, True], [True, False], [False, False]]), texts, targets)
    losses, count = [], 0
    with torch.no_grad():
        for i in range(3):
            one = Batch(batch.images[i:i + 1], batch.objects[i:i + 1], batch.mask[i:i + 1],
                        texts[i:i + 1], targets[i:i + 1])
            embeds, mask, labels = model.inputs(one)
            logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits[0, :-1].float()
            losses.append(torch.nn.functional.cross_entropy(logits, labels[0, 1:],
                                                            ignore_index=-100, reduction="sum"))
            count += int((labels[0, 1:] != -100).sum())
            assert int((labels[0, 1:] != -100).sum()) == len(targets[i]) + 1  # clue + EOS
        reference = float(sum(losses)) / count
        for share in (False, True):
            assert abs(float(model(batch, share_opening=share)) - reference) < 1e-4, share


def _look_batch(cfg, docs, captioned):
    g = torch.Generator().manual_seed(3)
    s = cfg.vit_image_size
    return Batch(torch.randn(2, 3, s, s, generator=g),
                 torch.randn(2, 2, cfg.vit_width, generator=g),
                 torch.tensor([[True, True], [True, False]]),
                 ["What is this? a picture of a banana and an owl", "Hm?"],
                 [docs[0][:3].tolist(), docs[5][:2].tolist()], captioned=captioned)


@pytest.mark.parametrize("layout", ["off", "always", "dropped"])
def test_training_sequence_is_the_models_sequence_with_loss_on_the_clue_only(setup, layout):
    from gemkr import anatomy

    cfg, model, _, docs = setup
    model.visual_caption = layout
    try:
        batch = _look_batch(cfg, docs, [True, False])
        for i, n_objects in ((0, 2), (1, 1)):
            seq = anatomy.training_sequence(model, batch, i)
            clue = seq[seq.kind == "clue"]
            target = batch.targets[i]
            assert len(clue) == len(target) + 1 and clue.position.is_monotonic_increasing
            assert clue.position.iloc[-1] == len(seq) - 1, "the clue and EOS end the sequence"
            assert clue.label.tolist() == [model.tokenizer.decode([t]) for t in
                                           [*target, model.sp.eos]]
            assert (seq.loc[seq.kind != "clue", "label"] == "masked").all()
            inline = layout == "always" or (layout == "dropped" and i == 1)
            kinds = set(seq.kind)
            if inline:  # the detected objects' tokens where a caption's names go, CLS after
                assert (seq.kind == "object token").sum() == n_objects and "CLS token" in kinds
            else:
                assert (seq.kind == "visual token").sum() == 3  # CLS + 2 (paper layout)
        shapes = anatomy.forward_shapes(model, batch).set_index("tensor")["shape"]
        assert shapes["inputs_embeds"].endswith(f", {cfg.llm_hidden})")
        assert shapes["visual tokens"] == f"(2, 3, {cfg.llm_hidden})" and shapes["loss"] == "()"
    finally:
        model.visual_caption = "off"


def test_training_sequence_fails_when_its_layout_drifts_from_the_model(setup, monkeypatch):
    from gemkr import anatomy

    cfg, model, _, docs = setup
    model.visual_caption = "always"
    monkeypatch.setattr(anatomy, "CAPTION_JOINT", " and then")  # not what the model writes
    try:
        with pytest.raises(AssertionError, match="drifted|positions"):
            anatomy.training_sequence(model, _look_batch(cfg, docs, [True, True]), 0)
    finally:
        model.visual_caption = "off"


def test_architecture_figure_labels_the_live_shapes(setup):
    import matplotlib

    matplotlib.use("Agg")
    from gemkr import anatomy

    cfg, model, _, docs = setup
    shapes = anatomy.forward_shapes(model, _look_batch(cfg, docs, [True, True]))
    fig = anatomy.architecture_figure(cfg, model, shapes)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert anatomy.shape_of(shapes, "visual tokens") in texts and "LoRA r=8" in texts
    assert f"det_conf {cfg.det_conf}" in texts and len(fig.axes[0].texts) == 9


def test_reloaded_trainable_weights_equal_the_saved_ones(setup, tmp_path):
    """What `trained` saves and loads back is every trainable tensor (LoRA, prefix rows, gates,
    projection), value for value: a key that failed to load would keep the perturbed value."""
    import json
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from gemkr import trained

    _, model, _, _ = setup
    saved = {k: v.clone() for k, v in train.trainable_state(model).items()}
    for part in ("lora_A", "lora_B", "adapter_query", "gates", "proj.weight"):
        assert any(part in k for k in saved), f"{part} is not saved"
    save_file(train.trainable_state(model), str(tmp_path / "trainable.safetensors"))
    (tmp_path / "run.json").write_text(json.dumps({"seconds": 1.0}))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    info = trained._load(SimpleNamespace(path=tmp_path), model)
    now = train.trainable_state(model)
    assert info == {"seconds": 1.0} and set(now) == set(saved)
    assert all(torch.equal(now[k], saved[k]) for k in saved)


@pytest.mark.parametrize("change", ["drop LoRA", "drop a gate", "extra tensor", "other shape"])
def test_weights_that_are_not_exactly_the_models_trainable_set_are_refused(setup, tmp_path,
                                                                          change):
    """`trained._load` and checkpoint resume load strictly: a file missing a trainable tensor
    (which `strict=False` alone would leave at its fresh value), holding one the model does not
    train, or one of another shape is named and refused, and the model is left as it was."""
    import json
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from gemkr import trained

    _, model, _, _ = setup
    state = train.trainable_state(model)
    if change == "drop LoRA":
        state = {k: v for k, v in state.items() if "lora_B" not in k}
    elif change == "drop a gate":
        state.pop(next(k for k in state if "gates" in k))
    elif change == "extra tensor":
        state["llm.extra.weight"] = torch.zeros(2)
    else:
        name = next(k for k in state if "proj.weight" in k)
        state[name] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "trainable.safetensors"))
    (tmp_path / "run.json").write_text(json.dumps({}))
    before = {k: v.clone() for k, v in train.trainable_state(model).items()}
    with pytest.raises(train.WeightsMismatchError, match="another model configuration"):
        trained._load(SimpleNamespace(path=tmp_path), model)
    assert all(torch.equal(v, before[k]) for k, v in train.trainable_state(model).items())


def test_training_moves_every_trainable_tensor_and_nothing_else(setup):
    """One optimizer covers every trainable part (gates and LoRA's zero-initialised B included)."""
    cfg, model, _, docs = setup
    g = torch.Generator().manual_seed(5)
    s = cfg.vit_image_size
    batch = Batch(torch.randn(2, 3, s, s, generator=g), torch.randn(2, 2, cfg.vit_width,
                                                                     generator=g),
                  torch.tensor([[True, True], [True, False]]), ["What is this?", "Hm?"],
                  [docs[1][:3].tolist(), docs[2][:2].tolist()])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train.fit(model, lambda m, b: m(b), lambda e: [batch] * 3, epochs=1, steps_per_epoch=3,
              lr=1e-2, min_lr=1e-3, warmup_steps=1, weight_decay=0.0)
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == p.requires_grad, f"{n}: trainable {p.requires_grad}, moved {moved}"
