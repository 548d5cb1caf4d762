"""Contrastive vision pretraining: the image tower learns to name objects (zero-shot)."""

import json

import torch

import gemkr
from gemkr import pretrain, train
from gemkr.data import benchmark, wordnet
from gemkr.vision import create_clip


def test_contrastive_pretraining_learns_to_name_crops(tmp_path):
    torch.manual_seed(0)
    cfg = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=48, vit_heads=4,
                           vit_layers=2)
    content = benchmark._build_okmoji(gemkr.get_config("smoke"), tmp_path / "b")
    (tmp_path / "b" / "content.json").write_text(json.dumps(content))
    bench = benchmark.load_benchmark(tmp_path / "b")
    model, tokenizer = create_clip(cfg, tmp_path / "oc")
    nouns = wordnet.load_nouns()
    texts = [wordnet.passage_text(nouns[s]) for s in bench.objects["synset"]]
    obj_text = pretrain.text_features(model, tokenizer, texts)
    data = pretrain.pair_tensors(bench, "train", cfg.vit_image_size)
    scene_text = pretrain.text_features(model, tokenizer, data["scene_texts"])
    assert data["crops"].shape[1:] == (3, 32, 32) and len(data["crops"]) == len(data["objs"])
    before = pretrain.zero_shot_accuracy(model, data["crops"], data["objs"], obj_text)
    batch = (data["crops"], data["objs"], obj_text, data["scenes"], scene_text)
    out = train.fit(model, lambda m, b: pretrain.contrastive_loss(m, *b),
                    lambda e: [batch], epochs=60, steps_per_epoch=1, lr=3e-3, min_lr=3e-4,
                    warmup_steps=3, weight_decay=0.05)
    after = pretrain.zero_shot_accuracy(model, data["crops"], data["objs"], obj_text)
    assert out["history"][-1] < 0.5 * out["history"][0]
    assert after > max(0.5, 3 * before), (before, after)
    assert all(not p.requires_grad for p in model.text.parameters())
