"""Object-aware prefix and dual-flow attention: identity at init, masking, trainable set."""

import pytest
import torch

import gemkr
from gemkr.vision import PrefixViT, VisualTokens, create_clip, encode_crops


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    cfg = gemkr.get_config("smoke", vit_image_size=32, vit_patch=8, vit_width=32, vit_heads=4,
                           vit_layers=4)
    model, tokenizer = create_clip(cfg, tmp_path_factory.mktemp("oc"))
    return model.eval(), tokenizer


def _inputs(seed=0, m=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, m, 32, generator=g),
            torch.tensor([[True, True, False], [True, False, False]]))


def _frozen_cls(visual, images):
    return visual.transformer(visual._embeds(images))[:, 0]


def test_text_tower_is_minilm_and_locked(clip):
    model, tokenizer = clip
    assert all(not p.requires_grad for p in model.text.parameters())
    with torch.no_grad():
        emb = model.encode_text(tokenizer(["a banana", "a yellow banana", "a motorcycle"]),
                                normalize=True)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2], "a real pretrained text tower"


@pytest.mark.parametrize("dual_flow", [True, False])
def test_zero_gates_equal_frozen_encoder(clip, dual_flow):
    model, _ = clip
    enc = PrefixViT(model.visual, prefix_len=10, dual_flow=dual_flow).eval()
    images, objs, mask = _inputs()
    cls, prefix = enc(images, objs, mask)
    assert prefix.shape == (2, 10, 32)
    if dual_flow:  # the gated flow is exactly zero at initialisation
        assert torch.allclose(cls, _frozen_cls(model.visual, images), atol=1e-5)
    else:  # a joined softmax changes the output even with zero gates: not an identity
        assert not torch.allclose(cls, _frozen_cls(model.visual, images), atol=1e-5)


@pytest.mark.parametrize("dual_flow", [True, False])
def test_masked_slots_do_not_change_output(clip, dual_flow):
    model, _ = clip
    enc = PrefixViT(model.visual, prefix_len=10, dual_flow=dual_flow).eval()
    with torch.no_grad():
        enc.gates.fill_(0.7)
        enc.adapter_query.mul_(0.1)
    images, objs, mask = _inputs()
    a, _ = enc(images, objs, mask)
    junk = objs.clone()
    junk[~mask] = 123.0
    b, _ = enc(images, junk, mask)
    assert torch.allclose(a, b, atol=1e-5)
    objs2 = objs.clone()
    objs2[0, 0] += 1.0  # a present slot does matter
    c, _ = enc(images, objs2, mask)
    assert not torch.allclose(a, c, atol=1e-5)
    none = enc(images, objs, torch.zeros_like(mask))[0]
    assert torch.isfinite(none).all(), "an image with no objects"


def test_only_prefix_gates_and_projection_train(clip):
    model, _ = clip
    enc = PrefixViT(model.visual, prefix_len=10)
    head = VisualTokens(32, llm_hidden=24)
    names = {n for n, p in [*enc.named_parameters(), *head.named_parameters()] if p.requires_grad}
    assert names == {"adapter_query", "gates", "proj.weight", "proj.bias"}
    assert enc.adapter_query.shape == (2, 10, 32) and enc.gates.shape == (2, 4)
    images, objs, mask = _inputs()
    tokens = head(*enc(images, objs, mask))
    assert tokens.shape == (2, 3, 24)
    tokens.sum().backward()
    # real gradients, not merely present ones (a zero gradient would train nothing)
    assert enc.gates.grad.abs().sum() > 0 and enc.adapter_query.grad.abs().sum() > 0
    assert head.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.visual.parameters())


def test_object_features_are_frozen_cls(clip):
    model, _ = clip
    crops = torch.randn(5, 3, 32, 32)
    feats = encode_crops(model.visual, crops, batch=2)
    assert feats.shape == (5, 32)
    assert torch.allclose(feats, _frozen_cls(model.visual, crops), atol=1e-5)
