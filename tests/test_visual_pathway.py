"""The visual pathway of issue 24 on tiny inputs: box features against a brute-force reference,
object tokens that follow their object (and change when its feature does), caption dropout, the
alignment examples (IoU matching, unseen objects left out) and the alignment stage itself (only
the projection learns; the naming probe goes from chance to every object named)."""

import dataclasses
import types

import numpy as np
import pandas as pd
import pytest
import torch

import gemkr
import gemkr.model
from gemkr import examples, train, trained
from gemkr.examples import GEOMETRY, box_geometry
from gemkr.model import GeMKR, build_llm
from gemkr.probe import object_naming
from gemkr.tokenizer import load_tokenizer, specials
from gemkr.vision import PrefixViT, VisualTokens, create_clip


def brute_geometry(boxes, w, h):
    """Loop-by-loop reference of `box_geometry`."""
    out = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
        bw, bh = (x1 - x0) / w, (y1 - y0) / h
        others = [b for j, b in enumerate(boxes) if j != i]
        def c(b, k):
            return (b[k] + b[k + 2]) / 2
        def a(b):
            return (b[2] - b[0]) * (b[3] - b[1])
        flags = [all(c(boxes[i], 0) <= c(o, 0) for o in others),
                 all(c(boxes[i], 0) >= c(o, 0) for o in others),
                 all(c(boxes[i], 1) <= c(o, 1) for o in others),
                 all(c(boxes[i], 1) >= c(o, 1) for o in others),
                 all(a(boxes[i]) >= a(o) for o in others),
                 all(a(boxes[i]) <= a(o) for o in others)]
        out.append([cx, cy, bw, bh, bw * bh, *map(float, flags)])
    return np.asarray(out).reshape(-1, len(GEOMETRY))


@pytest.mark.parametrize("seed", range(20))
def test_box_geometry_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    w, h = int(rng.integers(50, 300)), int(rng.integers(50, 300))
    x0, y0 = rng.integers(0, w // 2, n), rng.integers(0, h // 2, n)
    boxes = np.stack([x0, y0, x0 + rng.integers(1, w // 2, n), y0 + rng.integers(1, h // 2, n)],
                     1).astype(float)
    if seed % 5 == 0 and n > 1:
        boxes[1] = boxes[0]  # ties: both objects carry the flag
    np.testing.assert_allclose(box_geometry(boxes, (w, h)), brute_geometry(boxes.tolist(), w, h))


def test_box_geometry_names_the_left_and_the_biggest():
    g = pd.DataFrame(box_geometry([[0, 0, 10, 10], [50, 0, 90, 40]], (100, 100)), columns=GEOMETRY)
    assert g.leftmost.tolist() == [1.0, 0.0] and g.rightmost.tolist() == [0.0, 1.0]
    assert g.biggest.tolist() == [0.0, 1.0] and g.smallest.tolist() == [1.0, 0.0]
    assert box_geometry(np.zeros((0, 4)), (10, 10)).shape == (0, len(GEOMETRY))


def test_object_tokens_follow_their_object():
    torch.manual_seed(0)
    vt = VisualTokens(8, 6, n_objects=3, out_std=0.1, layout="objects", geometry=len(GEOMETRY))
    cls, prefix = torch.randn(2, 8), torch.randn(2, 10, 8)
    objects, geo = torch.randn(2, 10, 8), torch.rand(2, 10, len(GEOMETRY))
    out = vt(cls, prefix, objects, geo)
    assert out.shape == (2, 4, 6)
    swap = [1, 0, *range(2, 10)]
    swapped = vt(cls, prefix, objects[:, swap], geo[:, swap])
    torch.testing.assert_close(swapped[:, 1], out[:, 2])
    torch.testing.assert_close(swapped[:, 2], out[:, 1])
    # the prefix rows do not enter the object layout; a zeroed object feature changes its token
    torch.testing.assert_close(vt(cls, prefix * 3, objects, geo), out)
    zeroed = objects.clone()
    zeroed[:, 0] = 0
    assert not torch.allclose(vt(cls, prefix, zeroed, geo)[:, 1], out[:, 1])
    # its box too
    moved = geo.clone()
    moved[:, 0] = 1 - moved[:, 0]
    assert not torch.allclose(vt(cls, prefix, objects, moved)[:, 1], out[:, 1])


def test_paper_layout_is_cls_and_two_prefix_rows():
    torch.manual_seed(0)
    vt = VisualTokens(8, 6, n_objects=2, layout="paper")
    cls, prefix = torch.randn(2, 8), torch.randn(2, 10, 8)
    want = vt.proj(vt.norm(torch.cat([cls[:, None], prefix[:, :2]], 1)))
    torch.testing.assert_close(vt(cls, prefix, torch.randn(2, 10, 8)), want)
    with pytest.raises(ValueError, match="visual_layout"):
        VisualTokens(8, 6, layout="grid")


def frame(n):
    return pd.DataFrame({"qid": range(n), "scene_id": [0] * n, "text": [f"q{i} cap" for i in
                                                                          range(n)],
                         "question": [f"q{i}" for i in range(n)]})


@pytest.mark.parametrize(("p", "low", "high"), [(0.0, 0, 0), (1.0, 200, 200), (0.5, 70, 130)])
def test_caption_dropout_share(p, low, high):
    q = frame(200)
    inputs = {"row": {0: 0}, "images": torch.zeros(1, 3, 4, 4), "objects": torch.zeros(1, 2, 4),
              "mask": torch.zeros(1, 2, dtype=torch.bool), "geometry": torch.zeros(1, 2, 11)}
    texts = [t for b in examples.batches(q, inputs, [[1]] * 200, 16, np.random.default_rng(3),
                                         caption_dropout=p) for t in b.texts]
    dropped = sum(not t.endswith(" cap") for t in texts)
    assert low <= dropped <= high and sorted(texts) == sorted(
        t.removesuffix(" cap") if not t.endswith(" cap") else t for t in texts)
    again = [t for b in examples.batches(q, inputs, [[1]] * 200, 16, np.random.default_rng(3),
                                         caption_dropout=p) for t in b.texts]
    assert again == texts, "seeded: the same examples drop their caption"


def test_alignment_objects_match_true_boxes_and_skip_unasked_objects():
    scenes = pd.DataFrame({"scene_id": [0, 1, 2], "split": ["train", "train", "test"],
                           "objs": [[5, 6], [7], [5]],
                           "boxes": [[[0, 0, 10, 10], [20, 20, 40, 40]], [[0, 0, 30, 30]],
                                     [[0, 0, 10, 10]]]})
    dets = pd.DataFrame({"scene_id": [0, 0, 0, 1], "rank": [0, 1, 2, 0],
                         "x0": [21, 0, 60, 0], "y0": [20, 1, 60, 0], "x1": [40, 10, 70, 30],
                         "y1": [41, 10, 70, 30]})
    inputs = {"row": {0: 0, 1: 1, 2: 2}, "mask": torch.zeros(3, 4, dtype=torch.bool)}
    bench = types.SimpleNamespace(scenes=scenes)
    got = examples.alignment_objects(bench, dets, inputs, {5: 105, 6: 106})
    # slot 0 is object 6 (the second true box), slot 1 object 5; slot 2 matches nothing;
    # scene 1's object 7 is asked about by no training question; scene 2 is a test scene
    assert got[["scene_id", "slot", "obj", "pid"]].values.tolist() == [[0, 0, 6, 106],
                                                                       [0, 1, 5, 105]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    cfg = gemkr.get_config("smoke", llm_hidden=32, llm_layers=2, llm_heads=4)
    tok = load_tokenizer("smollm2")
    sp = specials(tok)
    return cfg, tok, sp, build_llm(cfg, sp)


def naming_setup(tiny, n=6):
    cfg, tok, sp, llm = tiny
    for p in llm.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    inputs = {"objects": torch.randn(n, 2, 16) * 3, "geometry": torch.rand(n, 2, len(GEOMETRY)),
              "mask": torch.ones(n, 2, dtype=torch.bool), "images": torch.zeros(n, 3, 8, 8)}
    objects = pd.DataFrame({"row": range(n), "slot": [i % 2 for i in range(n)],
                            "pid": range(100, 100 + n), "obj": range(n)})
    names = ["owl", "harp", "bus", "ant", "apple", "kite", "banana tree", "tuba"][:n]
    target_of = {100 + i: tok(" " + w, add_special_tokens=False)["input_ids"]
                 for i, w in enumerate(names)}
    proj_cfg = dataclasses.replace(cfg, object_names=False)  # the alignment stage's tokens
    model = GeMKR(None, trained.visual_tokens(proj_cfg, 16, llm, 1), llm, tok, sp, use_text=False)
    return model, inputs, objects, target_of


def test_object_naming_matches_brute_force(tiny):
    """The batched probe against one forward per (object, candidate): the mean token loss of the
    candidate's clue + EOS after the object's token alone, the object named when its own clue
    has the lowest."""
    model, inputs, objects, target_of = naming_setup(tiny, n=8)
    model.eval()
    with torch.no_grad():
        for p in model.visual_tokens.parameters():  # a projection that says something
            p.normal_(0, 0.5)
    share, chance = object_naming(model, inputs, objects, target_of, n_distractors=7, batch=5)
    hits = []
    with torch.no_grad():
        for o in objects.itertuples():
            one = gemkr.model.Batch(None, inputs["objects"][o.row, o.slot][None], None, [""], None,
                                    inputs["geometry"][o.row, o.slot][None])
            loss = {pid: float(model.align_loss(gemkr.model.Batch(
                one.images, one.objects, None, [""], [t], one.geometry)))
                for pid, t in target_of.items()}
            hits.append(min(loss, key=loss.get) == o.pid)
    assert chance == pytest.approx(1 / 8)
    assert share == pytest.approx(np.mean(hits))


def test_alignment_stage_trains_the_projection_only(tiny):
    model, inputs, objects, target_of = naming_setup(tiny)
    llm = model.llm
    frozen = {k: v.clone() for k, v in llm.state_dict().items()}
    start = {k: v.clone() for k, v in model.visual_tokens.state_dict().items()}
    targets = [target_of[p] for p in objects.pid]
    out = train.fit(model, lambda m, b: m.align_loss(b),
                    lambda e: examples.alignment_batches(objects, inputs, targets, 3,
                                                         np.random.default_rng(e)),
                    epochs=15, steps_per_epoch=2, lr=3e-2, min_lr=1e-3, warmup_steps=2,
                    weight_decay=0.0)
    h = out["history"]
    assert np.mean(h[-6:]) < np.mean(h[:6]), "the alignment loss falls"
    assert all(torch.equal(v, frozen[k]) for k, v in llm.state_dict().items()), "LLM frozen"
    assert set(train.trainable_state(model)) == {
        "visual_tokens.proj.weight", "visual_tokens.proj.bias", "visual_tokens.geo.weight",
        "visual_tokens.geo.bias"}
    moved = {k: not torch.equal(v, start[k]) for k, v in model.visual_tokens.state_dict().items()}
    assert moved["proj.weight"] and moved["geo.weight"], moved


def test_aligns_only_object_tokens_made_of_features():
    cfg = gemkr.get_config("smoke", object_names=False)
    assert trained.aligns(cfg)
    for off in ({"align_epochs": 0}, {"use_image": False}, {"object_features": False},
                {"visual_layout": "paper"}, {"object_names": True}):
        assert not trained.aligns(dataclasses.replace(cfg, **off)), off
    assert trained.uses_names(gemkr.get_config("smoke"))
    assert not trained.uses_names(gemkr.get_config("paper"))


def test_visual_uses_each_objects_feature_and_box(tmp_path):
    """GeMKR.visual in the objects layout: a zeroed object feature, an object left out by the
    config or a moved box each change the tokens the LLM reads."""
    torch.manual_seed(0)
    cfg = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4,
                           vit_layers=2, llm_hidden=32, llm_layers=2, llm_heads=4)
    tok = load_tokenizer("smollm2")
    sp = specials(tok)
    clip, _ = create_clip(cfg, tmp_path)
    llm = build_llm(cfg, sp)

    def model(**kw):
        c = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4,
                             vit_layers=2, llm_hidden=32, llm_layers=2, llm_heads=4,
                             object_names=False, **kw)
        enc = PrefixViT(clip.visual, prefix_len=c.prefix_len, object_features=c.object_features)
        torch.manual_seed(0)
        return GeMKR(enc, trained.visual_tokens(c, 32, llm, c.visual_objects), llm, tok, sp)

    from gemkr.model import Batch
    g = torch.Generator().manual_seed(2)
    slots = cfg.max_objects  # the pipeline's batches hold max_objects slots
    batch = Batch(images=torch.randn(1, 3, 32, 32, generator=g),
                  objects=torch.randn(1, slots, 32, generator=g),
                  mask=torch.tensor([[True, True] + [False] * (slots - 2)]), texts=["q"],
                  geometry=torch.rand(1, slots, len(GEOMETRY), generator=g))
    m = model()
    base = m.visual(batch)
    assert base.shape == (1, 1 + cfg.visual_objects, 32)
    zeroed = Batch(batch.images, batch.objects.clone(), batch.mask, batch.texts,
                   geometry=batch.geometry)
    zeroed.objects[0, 1] = 0
    assert not torch.allclose(m.visual(zeroed)[0, 2], base[0, 2])
    torch.testing.assert_close(m.visual(zeroed)[0, 1], base[0, 1])  # object 0 untouched
    moved = Batch(batch.images, batch.objects, batch.mask, batch.texts,
                  geometry=batch.geometry.flip(-1))
    assert not torch.allclose(m.visual(moved)[0, 1], base[0, 1])
    blind = model(object_features=False).visual(batch)
    assert not torch.allclose(blind[0, 1], base[0, 1])


def test_more_object_tokens_than_slots_is_a_config_error():
    with pytest.raises(gemkr.config.ConfigError, match="visual_objects=12"):
        gemkr.get_config("smoke", visual_objects=12)
    assert gemkr.get_config("smoke", visual_objects=12, visual_layout="paper").visual_objects == 12


def test_visual_caption_and_detector_thresholds_are_checked():
    with pytest.raises(gemkr.config.ConfigError, match="visual_caption='sometimes'"):
        gemkr.get_config("smoke", visual_caption="sometimes")
    with pytest.raises(gemkr.config.ConfigError, match="det_conf=0.3, caption_conf=0.25"):
        gemkr.get_config("smoke", det_conf=0.3)
    assert gemkr.get_config("smoke", det_conf=0.25).det_conf == 0.25


def test_name_lookup_reads_the_towers_naming():
    """NameLookup against its definition: softmax(s * cos(pool(R), T)) @ E, and a crop the
    tower names sharply as object j becomes (almost) the embedding of j's name."""
    from gemkr.vision import NameLookup

    g = torch.Generator().manual_seed(0)
    width, dim, hidden, n = 8, 6, 5, 4
    ln_w, ln_b = torch.rand(width, generator=g) + 0.5, torch.randn(width, generator=g) * 0.1
    proj = torch.randn(width, dim, generator=g)
    text = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    emb = torch.randn(n, hidden, generator=g)
    one = torch.ones(n, 1, dtype=torch.bool)
    look = NameLookup(ln_w, ln_b, 1e-5, proj, text, emb[:, None], one, sharpness=7.0)
    objects = torch.randn(3, 2, width, generator=g)
    x = torch.nn.functional.layer_norm(objects, (width,), ln_w, ln_b, 1e-5) @ proj
    cos = torch.nn.functional.normalize(x, dim=-1) @ text.T
    torch.testing.assert_close(look(objects)[..., 0, :], torch.softmax(7.0 * cos, -1) @ emb)
    assert not any(k.startswith(("proj", "text")) for k in look.state_dict())  # not saved
    sharp = NameLookup(ln_w, ln_b, 1e-5, proj, text, emb[:, None], one, sharpness=1e4)
    best = cos.argmax(-1)
    torch.testing.assert_close(sharp(objects)[..., 0, :], emb[best], atol=1e-3, rtol=1e-3)


def test_name_lookup_spells_names_over_their_tokens():
    """Spelled names against a brute force: position l is the naming-weighted mean of the l-th
    token embeddings over the names that have one; a sharp naming spells the top name's own
    tokens, and `lengths` is that name's token count."""
    from gemkr.vision import NameLookup

    g = torch.Generator().manual_seed(1)
    width, dim, hidden, n, positions = 8, 6, 5, 5, 3
    ln_w, ln_b = torch.rand(width, generator=g) + 0.5, torch.randn(width, generator=g) * 0.1
    proj = torch.randn(width, dim, generator=g)
    text = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
    lengths = torch.tensor([1, 3, 2, 1, 3])
    valid = torch.arange(positions) < lengths[:, None]
    spelled = torch.randn(n, positions, hidden, generator=g)
    look = NameLookup(ln_w, ln_b, 1e-5, proj, text, spelled, valid, sharpness=5.0)
    objects = torch.randn(4, 2, width, generator=g)
    p = look.naming(objects)
    out = look(objects)
    assert out.shape == (4, 2, positions, hidden)
    for b in range(4):
        for k in range(2):
            for pos in range(positions):
                has = [j for j in range(n) if pos < int(lengths[j])]
                w = p[b, k, has]
                expect = (w[:, None] * spelled[has, pos]).sum(0) / w.sum()
                torch.testing.assert_close(out[b, k, pos], expect)
    torch.testing.assert_close(look.lengths(objects), lengths[p.argmax(-1)])
    sharp = NameLookup(ln_w, ln_b, 1e-5, proj, text, spelled, valid, sharpness=1e4)
    best = sharp.naming(objects).argmax(-1)
    for b in range(4):
        for k in range(2):
            m = int(lengths[best[b, k]])
            torch.testing.assert_close(sharp(objects)[b, k, :m], spelled[best[b, k], :m],
                                       atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="at least one token"):
        NameLookup(ln_w, ln_b, 1e-5, proj, text, spelled, valid & False, sharpness=1.0)


def test_variants_share_the_name_lookup_only_where_it_would_be_the_same():
    """`trained._shared_lookup`: an ablation variant takes a copy of its base's name lookup when
    the tower, the stage-2 LLM and the lookup's settings are the same, and computes its own
    otherwise (another LLM, another spelling, no lookup)."""
    from types import SimpleNamespace

    import gemkr
    from gemkr import trained
    from gemkr.vision import NameLookup

    g = torch.Generator().manual_seed(2)
    look = NameLookup(torch.ones(8), torch.zeros(8), 1e-5, torch.randn(8, 6, generator=g),
                      torch.randn(4, 6, generator=g), torch.randn(4, 2, 5, generator=g),
                      torch.ones(4, 2, dtype=torch.bool), sharpness=9.0)
    cfg = gemkr.get_config("default")
    parts = SimpleNamespace(cfg=cfg, info={"llm_key": "k"},
                            model=SimpleNamespace(visual_tokens=SimpleNamespace(names=look)))
    shared = trained._shared_lookup(cfg, parts, "k")
    assert shared is not look and shared.sharpness == look.sharpness
    for a, b in zip(shared.buffers(), look.buffers(), strict=True):
        assert torch.equal(a, b)
    assert trained._shared_lookup(cfg, parts, "other LLM") is None
    assert trained._shared_lookup(cfg, None, "k") is None
    for change in ({"name_tokens": 1}, {"name_sharpness": 25.0}, {"object_names": False},
                   {"visual_layout": "paper"}):
        assert trained._shared_lookup(gemkr.get_config("default", **change), parts, "k") is None
    parts.model.visual_tokens.names = None  # a base without a lookup (the paper's layout)
    assert trained._shared_lookup(cfg, parts, "k") is None


def test_visual_caption_puts_detected_object_tokens_where_the_caption_goes(tiny):
    """`visual_caption="dropped"`: without the detector's caption the prompt is '<question> a
    picture of' + the detected objects' tokens + the rest of the template + CLS; with it, the
    tokens stay at <ImageHere>. "always": a captioned prompt gets them after its caption
    ('<question> <caption>:' + tokens). Empty slots are left out."""
    from gemkr.model import CAPTION_JOINT, CAPTION_OPENING, PROMPT, Batch, template_ids

    cfg, tok, sp, llm = tiny
    model = GeMKR(None, None, llm, tok, sp)
    model.visual_caption = "dropped"
    hidden = llm.get_input_embeddings().weight.shape[1]
    visual = torch.randn(2, 4, hidden)  # CLS + 3 object tokens
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    text = "What is the fruit on the left?"
    batch = Batch(None, None, mask, [text, text], None, captioned=[False, True])
    (inline, _), (plain, _) = model._pieces(batch, visual)
    emb = llm.get_input_embeddings()
    head, tail = PROMPT.split("<ImageHere>")[0].split("{input}")
    first = [sp.bos, *tok(head + text + CAPTION_OPENING, add_special_tokens=False)["input_ids"]]
    rest = tok(tail, add_special_tokens=False)["input_ids"]
    after = template_ids(tok, sp.bos)[1]
    with torch.no_grad():
        expect = torch.cat([emb(torch.tensor(first)), visual[0, [1, 3]], emb(torch.tensor(rest)),
                            visual[0, :1], emb(torch.tensor(after))])
        torch.testing.assert_close(inline, expect)
        before = template_ids(tok, sp.bos, text)[0]
        torch.testing.assert_close(plain, torch.cat([emb(torch.tensor(before)), visual[1],
                                                     emb(torch.tensor(after))]))
    model.visual_caption = "always"  # the captioned prompt too, after its caption
    (again, _), (joined, _) = model._pieces(batch, visual)
    torch.testing.assert_close(again, inline)
    first = [sp.bos, *tok(head + text + CAPTION_JOINT, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        torch.testing.assert_close(joined, torch.cat([
            emb(torch.tensor(first)), visual[1, 1:], emb(torch.tensor(rest)), visual[1, :1],
            emb(torch.tensor(after))]))
    model.visual_caption = "off"  # switched off: both prompts keep the paper's layout
    (off, _), (plain_off, _) = model._pieces(batch, visual)
    assert off.shape[0] == len(before) + 4 + len(after)
    torch.testing.assert_close(plain_off, plain)


def test_make_batch_marks_the_texts_without_caption():
    inputs = {"row": {7: 0, 8: 1}, "images": torch.zeros(2, 3, 4, 4),
              "objects": torch.zeros(2, 2, 3), "mask": torch.ones(2, 2, dtype=torch.bool)}
    q = pd.DataFrame({"scene_id": [7, 8], "question": ["a?", "b?"],
                      "text": ["a? a picture of an owl", "b?"]})
    assert examples.make_batch(q, inputs).captioned == [True, False]
    assert examples.make_batch(q, inputs, texts=["a?", "b? x"]).captioned == [False, True]
    q = q.assign(caption_names=[["owl"], ["bus"]])  # the names go only where the caption is
    assert examples.make_batch(q, inputs).names == [["owl"], []]
    assert examples.make_batch(q, inputs, texts=["a?", "b? x"]).names == [[], ["bus"]]


def test_model_questions_name_the_detector_captions_objects():
    q = pd.DataFrame({"scene_id": [7, 8, 9], "question": ["a?", "b?", "c?"],
                      "caption": ["", "", "a photo of a dog"]})
    labels = {7: ["owl", "bus"], 9: ["cat"]}
    caps = {7: "a picture of an owl and a bus", 8: "a picture", 9: "a picture of a cat"}
    got = examples.model_questions(q, caps, True, labels)
    assert got["caption_names"].tolist() == [["owl", "bus"], [], []]  # 9 keeps its own caption
    assert got["text"].tolist()[0] == "a? a picture of an owl and a bus"
    off = examples.model_questions(q, caps, False, labels)
    assert off["caption_names"].tolist() == [[], [], []] and off["text"].tolist() == ["a?", "b?",
                                                                                     "c?"]
    assert "caption_names" not in examples.model_questions(q, caps, True)


def _spelled_model(tmp_path, first_ids: bool = False):
    """A smoke-sized GeMKR whose object tokens spell three names ("banana", "golden retriever",
    "cat") from a sharp name lookup: feature j is named name j."""
    from gemkr.vision import NameLookup

    torch.manual_seed(0)
    kw = dict(vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4, vit_layers=2,
              llm_hidden=32, llm_layers=2, llm_heads=4, box_features=False, name_tokens=4)
    cfg = gemkr.get_config("smoke", **kw)
    tok = load_tokenizer("smollm2")
    sp = specials(tok)
    clip, _ = create_clip(cfg, tmp_path)
    llm = build_llm(cfg, sp)
    emb = llm.get_input_embeddings().weight.detach()
    names = ["banana", "golden retriever", "cat"]
    ids = [tok(" " + n, add_special_tokens=False)["input_ids"] for n in names]
    assert sorted(len(i) for i in ids)[-1] > 1  # a name of several tokens
    spelled = torch.zeros(len(names), 4, emb.shape[1])
    valid = torch.zeros(len(names), 4, dtype=torch.bool)
    for j, i in enumerate(ids):
        spelled[j, :len(i)], valid[j, :len(i)] = emb[torch.tensor(i)], True
    g = torch.Generator().manual_seed(3)
    features = torch.randn(len(names), 32, generator=g)
    proj = torch.randn(32, 16, generator=g)
    ones, zeros = torch.ones(32), torch.zeros(32)
    text = torch.nn.functional.normalize(
        torch.nn.functional.layer_norm(features, (32,), ones, zeros, 1e-5) @ proj, dim=-1)
    look = NameLookup(ones, zeros, 1e-5, proj, text, spelled, valid, sharpness=1e4,
                      first_ids=[i[0] for i in ids] if first_ids else None)
    enc = PrefixViT(clip.visual, prefix_len=cfg.prefix_len, object_features=True)
    model = GeMKR(enc, trained.visual_tokens(cfg, 32, llm, cfg.visual_objects, look), llm, tok,
                  sp)
    return model, tok, sp, cfg, emb, features, ids


def test_spelled_names_reach_the_prompt_as_the_names_tokens(tmp_path):
    """With a sharp naming, the visual caption of an uncaptioned prompt reads like text: each
    detected object's name spelled in its own token embeddings (as many positions as the name
    has tokens; the padded positions and the empty slot left out), in slot order. The same
    tokens stay at <ImageHere> (without their padding) when the visual caption is off."""
    from gemkr.model import CAPTION_OPENING, PROMPT, Batch, template_ids

    model, tok, sp, cfg, emb, features, ids = _spelled_model(tmp_path)
    model.visual_caption = "always"
    slots = cfg.max_objects
    objects = torch.zeros(1, slots, 32)
    objects[0, 0], objects[0, 1], objects[0, 3] = features[1], features[0], features[2]
    mask = torch.zeros(1, slots, dtype=torch.bool)
    mask[0, [0, 1, 3]] = True  # slot 2 empty
    text_q = "What is it?"
    batch = Batch(torch.randn(1, 3, 32, 32), objects, mask, [text_q], None, captioned=[False])
    with torch.no_grad():
        visual = model.visual(batch)
        assert visual.shape == (1, 1 + cfg.visual_objects * 4, emb.shape[1])
        (inline, _), = model._pieces(batch, visual)
        head, tail = PROMPT.split("<ImageHere>")[0].split("{input}")
        first = [sp.bos, *tok(head + text_q + CAPTION_OPENING, add_special_tokens=False)[
            "input_ids"]]
        rest = tok(tail, add_special_tokens=False)["input_ids"]
        after = template_ids(tok, sp.bos)[1]
        said = [*ids[1], *ids[0], *ids[2]]
        expect = torch.cat([emb[torch.tensor(first)], emb[torch.tensor(said)],
                            emb[torch.tensor(rest)], visual[0, :1], emb[torch.tensor(after)]])
        torch.testing.assert_close(inline, expect, atol=1e-3, rtol=1e-3)
        model.visual_caption = "off"
        (plain, _), = model._pieces(batch, visual)
        before = template_ids(tok, sp.bos, text_q)[0]
        torch.testing.assert_close(plain, torch.cat([
            emb[torch.tensor(before)], visual[0, :1], emb[torch.tensor(said)],
            emb[torch.tensor(after)]]), atol=1e-3, rtol=1e-3)


def test_first_tokens_are_the_names_the_prompt_holds(tmp_path):
    """`GeMKR.first_tokens`: the first token of each caption name (only where the item reads its
    caption and the model its text) and of the tower's top-1 name of each detected object slot
    the visual tokens hold (only where the model reads the image); retrieval under
    ``first_token="prompt name"`` opens every clue with one of them."""
    from gemkr.decoding import DecodeConfig
    from gemkr.index import CorpusIndex
    from gemkr.model import Batch

    model, tok, sp, cfg, _, features, ids = _spelled_model(tmp_path, first_ids=True)
    model.visual_caption = "always"
    n = cfg.visual_objects
    assert n >= 2
    objects = torch.zeros(2, cfg.max_objects, 32)
    objects[:, 0], objects[:, 1] = features[1], features[0]  # golden retriever, banana
    mask = torch.zeros(2, cfg.max_objects, dtype=torch.bool)
    mask[0, [0, 1]] = True
    mask[1, 1] = True  # item 1: slot 0 empty, so no golden retriever
    if cfg.max_objects > n:
        objects[:, n], mask[:, n] = features[2], True  # beyond the object tokens: not held
    cat = tok(" cat", add_special_tokens=False)["input_ids"][0]
    batch = Batch(torch.randn(2, 3, 32, 32), objects, mask, ["What is it? a picture of a cat",
                                                              "What is it?"], None,
                  captioned=[True, False], names=[["cat"], ["cat"]])
    got = [set(a.tolist()) for a in model.first_tokens(batch)]
    assert got == [{cat, ids[1][0], ids[0][0]}, {ids[0][0]}]
    model.use_text = False  # no text read: the caption's names are not in the prompt
    assert [set(a.tolist()) for a in model.first_tokens(batch)] == [{ids[1][0], ids[0][0]},
                                                                    {ids[0][0]}]
    model.use_text, model.use_image = True, False  # no image read: only the caption's names
    assert [set(a.tolist()) for a in model.first_tokens(batch)] == [{cat}, set()]
    model.use_image = True

    docs = [tok(t, add_special_tokens=False)["input_ids"] for t in (
        " a cat sleeps on the mat", " golden retriever dogs swim", " the banana is yellow",
        " a tuba is loud", " owls hunt at night")]
    index = CorpusIndex.build(docs, eos=sp.eos, bos=sp.bos, vocab_size=len(tok), progress=False)
    dcfg = DecodeConfig(num_beams=4, num_beam_groups=4, max_clue_tokens=4,
                        first_token="prompt name")
    for clues, allowed in zip(model.retrieve(batch, index, dcfg), got, strict=True):
        assert clues and all(c.tokens[0] in allowed for c in clues)


def test_choice_loss_is_the_gold_openings_cross_entropy_among_the_prompts_names(tmp_path):
    """`choice_loss` adds, to the clue's cross-entropy, the weight times the mean over items of
    -log p(gold first token | the prompt's openings), brute-forced here from each item's own
    first-step log-probabilities (`explore.next_token_logprobs`); an item with one opening, or
    whose gold opening the prompt does not hold, adds nothing; the weight 0 leaves the loss
    unchanged."""
    from gemkr.explore import next_token_logprobs
    from gemkr.model import Batch

    model, tok, sp, cfg, _, features, ids = _spelled_model(tmp_path, first_ids=True)
    model.visual_caption = "always"
    model.eval()
    objects = torch.zeros(4, cfg.max_objects, 32)
    objects[:, 0], objects[:, 1] = features[1], features[0]  # golden retriever, banana
    mask = torch.zeros(4, cfg.max_objects, dtype=torch.bool)
    mask[:, [0, 1]] = True
    mask[2, 0] = False  # item 2: only the banana, and no caption: one opening
    cat = tok(" cat", add_special_tokens=False)["input_ids"]
    tuba = tok(" tuba", add_special_tokens=False)["input_ids"]
    # banana (held), cat (held), banana (the only opening), tuba (not held)
    targets = [[*ids[0], 5], [*cat, 7], [*ids[0], 9], [*tuba, 11]]
    texts = ["Which fruit? a picture of a cat", "Which pet? a picture of a cat", "Which fruit?",
             "Which instrument? a picture of a cat"]
    batch = Batch(torch.randn(4, 3, 32, 32), objects, mask, texts, targets,
                  captioned=[True, True, False, True], names=[["cat"], ["cat"], [], ["cat"]])
    sets = model.first_tokens(batch)
    assert [len(s) for s in sets] == [3, 3, 1, 3] and tuba[0] not in sets[3]
    with torch.no_grad():
        model.choice_loss = 0.0
        plain = float(model(batch))
        model.choice_loss = 0.7
        both = float(model(batch))
        terms = []
        for i in (0, 1):  # item 2 has one opening only, item 3's gold is not among its own
            one = Batch(batch.images[i:i + 1], objects[i:i + 1], mask[i:i + 1], texts[i:i + 1],
                        None, captioned=[True], names=[["cat"]])
            logp = next_token_logprobs(model, one, [])
            row = logp[torch.as_tensor(sets[i])]
            terms.append(float(torch.logsumexp(row, 0) - logp[targets[i][0]]))
    assert abs((both - plain) - 0.7 * sum(terms) / 2) < 1e-4
    assert all(t > 0 for t in terms)
    model.choice_loss = 0.0
