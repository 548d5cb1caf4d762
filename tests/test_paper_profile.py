"""The `paper` profile without the paper's weights (issue 18).

Each component is built from a *structurally identical, tiny* stand-in the test writes to disk: an
open_clip model whose image tower is a timm EVA01-style trunk (few, narrow blocks) saved as a
checkpoint file; a tiny LLaMA saved with ``save_pretrained`` next to a SentencePiece-style
tokenizer (LLaMA's word-start marks, <s> = 1, </s> = 2); YOLO yaml models saved as ``.pt``. They
go through the code paths `paper` runs (the same functions, switched by the same settings), and
every named error is provoked. The full-size EVA01-g-14 and LLaMA-7B / 13B are built on the meta
device (no memory) to check parameter counts against the closed forms of paper-notes §2 and §6.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gemkr
from gemkr import detect, eva, paper_files, trained
from gemkr.decoding import DecodeConfig
from gemkr.index import CorpusIndex
from gemkr.model import (
    Batch,
    LLMFileError,
    TokenizerMismatchError,
    build_llm,
    closed_form_trainable,
)
from gemkr.tokenizer import clue_text, encode_passages, load_tokenizer, specials, word_prefix
from gemkr.vision import PrefixViT, create_clip, encode_crops, trunk_of

ROOT = Path(__file__).resolve().parent.parent
TINY_EVA = "gemkr-test-eva01-tiny"
SIDE, WIDTH, HEADS, DEPTH = 28, 32, 4, 4  # 2x2 patches of 14 px + CLS; 4 blocks, 3 kept

PASSAGES = [
    "the red fox is a small carnivore of the dog family with a bushy tail",
    "a violin is a bowed string instrument with four strings tuned in fifths",
    "the honey bee is a social insect that makes honey and wax",
    "a lighthouse is a tower with a bright lamp that guides ships at night",
    "the owl is a nocturnal bird of prey with large forward facing eyes",
    "a kettle is a metal pot with a lid and a spout for boiling water",
]


# ------------------------------------------------------------------------------ stand-ins
def _register_tiny_eva(tmp: Path) -> None:
    """An open_clip config of the EVA01 family: the same timm `Eva` block (fused qkv, q/v bias,
    absolute positions, MLP ratio 6144/1408, no layer scale), few and narrow blocks."""
    import open_clip
    from timm.models import eva as timm_eva
    from timm.models import register_model

    name = TINY_EVA.replace("-", "_")
    if name not in timm_eva.__dict__:
        def tiny(pretrained=False, **kwargs):
            kwargs.pop("pretrained_cfg", None)
            kwargs.pop("pretrained_cfg_overlay", None)
            kwargs.pop("cache_dir", None)
            return timm_eva.Eva(**{"img_size": SIDE, "patch_size": 14, "embed_dim": WIDTH,
                                   "depth": DEPTH, "num_heads": HEADS,
                                   "mlp_ratio": 6144 / 1408, **kwargs})
        tiny.__name__ = name
        tiny.__module__ = timm_eva.__name__
        register_model(tiny)
        timm_eva.__dict__[name] = tiny
    spec = {"embed_dim": 16,
            "vision_cfg": {"image_size": SIDE, "timm_model_name": name,
                           "timm_model_pretrained": False, "timm_pool": "token",
                           "timm_proj": None},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                         "layers": 1},
            "custom_text": True}
    path = tmp / f"{TINY_EVA}.json"
    path.write_text(json.dumps(spec))
    open_clip.add_model_config(path)


def _eva_cfg(weights, **changes):
    return gemkr.get_config("paper", vision=TINY_EVA, eva_weights=str(weights), vit_width=WIDTH,
                            vit_heads=HEADS, vit_layers=DEPTH - 1, vit_image_size=SIDE,
                            **changes)


@pytest.fixture(scope="module")
def eva_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eva")
    _register_tiny_eva(tmp)
    torch.manual_seed(0)
    model = eva.build_eva_clip(_eva_cfg(tmp / "x"))
    with torch.no_grad():  # timm starts q/v biases at zero: make them matter, as trained ones do
        for name, p in model.named_parameters():
            if name.endswith(("q_bias", "v_bias")):
                p.normal_(0.0, 0.5)
    path = tmp / "eva_tiny.bin"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def _sentencepiece_tokenizer(folder: Path):
    """A tiny BPE with LLaMA's conventions: the word-start mark ▁ with a dummy prefix, byte
    fallback, <unk> 0, <s> 1, </s> 2 (the folder layout of a converted LLaMA: tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tk.train_from_iterator(PASSAGES * 3 + ["what does it eat a picture of"],
                           trainers.BpeTrainer(vocab_size=300,
                                               special_tokens=["<unk>", "<s>", "</s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.save_pretrained(folder)
    return tok


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    import transformers

    folder = tmp_path_factory.mktemp("llama") / "llama-tiny"
    tok = _sentencepiece_tokenizer(folder)
    conf = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=4, max_position_embeddings=256,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(conf).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------ settings
def test_paper_paths_come_from_the_root_or_one_variable_each(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMKR_PAPER_ROOT", str(tmp_path))
    monkeypatch.setenv("GEMKR_LLAMA", str(tmp_path / "elsewhere" / "llama"))
    cfg = gemkr.get_config("paper")
    assert cfg.data_root == str(tmp_path / "data")
    assert cfg.eva_weights == str(tmp_path / "eva01_g14.bin")
    assert cfg.yolo_weights == str(tmp_path / "yolo.pt")
    assert cfg.llm == cfg.tokenizer == str(tmp_path / "elsewhere" / "llama")  # LLaMA's tokenizer
    given = gemkr.get_config("paper", data_root="/d", tokenizer="/t")
    assert given.data_root == "/d" and given.tokenizer == "/t"
    assert gemkr.get_config("default").llm == "smollm2"  # other profiles untouched
    assert cfg.vit_layers == 39 and cfg.vit_image_size == 224 and cfg.vision == "eva01_g14"


def test_dry_run_lists_every_file_and_fails_while_one_is_missing(tmp_path, llama_dir,
                                                                 eva_file):
    env = {**os.environ, "GEMKR_PAPER_ROOT": str(tmp_path)}
    cmd = [sys.executable, "tools/run_all.py", "--check-only", "--dry-run", "--profile", "paper"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stdout.count("[MISSING]") == 10 and "0 of 10 ready" in out.stdout
    for published in ("okvqa.allenai.org", "luomancs/retriever_reader_for_okvqa",
                      "eva_giant_patch14_clip_224", "LLaMA", "ultralytics"):
        assert published in out.stdout
    assert "nothing was run" in out.stderr
    # put every file in place (structurally: the dry run reads no contents beyond folder form)
    data = tmp_path / "data"
    for _, path, _, folder in paper_files.dataset_files("okvqa_gs112k", data):
        if folder:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
    (tmp_path / "llama-7b").mkdir()
    (tmp_path / "llama-7b" / "config.json").write_text("{}")  # a folder that is not an HF model
    (tmp_path / "eva01_g14.bin").write_bytes(eva_file[0].read_bytes())
    (tmp_path / "yolo.pt").write_bytes(b"x")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "[BAD    ] LLM" in out.stdout and "model_type" in out.stdout
    env["GEMKR_LLAMA"] = str(llama_dir)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10 of 10 ready" in out.stdout and "MISSING" not in out.stdout


# ------------------------------------------------------------------------------ EVA tower
def test_eva_loads_from_the_file_frozen_and_cut(eva_file):
    path, saved = eva_file
    clip, tokenizer = create_clip(_eva_cfg(path), Path("unused"))
    trunk = clip.visual.trunk
    assert len(trunk.blocks) == DEPTH - 1  # the last block dropped (EVA01-g-14: 39 of 40)
    assert torch.equal(trunk.blocks[0].attn.qkv.weight,
                       saved["visual.trunk.blocks.0.attn.qkv.weight"])
    assert not any(p.requires_grad for p in clip.parameters())
    assert tokenizer(["a fox"]).shape[0] == 1
    cls = encode_crops(clip.visual, _images(3))
    # the CLIP-crops baseline's embedding: final norm and projection head of EVA-CLIP
    assert trunk_of(clip.visual).pool(cls).shape == (3, 16)


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIDE, SIDE, generator=g)


def _block_outputs(trunk, images):
    """Each block's output in timm's own forward (hooks), before the final norm."""
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in trunk.blocks]
    with torch.no_grad():
        trunk.forward_features(images)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("dual_flow", [True, False])
def test_eva_prefix_attaches_to_the_last_half_and_starts_as_the_identity(eva_file, dual_flow):
    clip, _ = create_clip(_eva_cfg(eva_file[0]), Path("unused"))
    enc = PrefixViT(clip.visual, prefix_len=4, dual_flow=dual_flow)
    assert (enc.n_prefix, enc.first) == (2, 1)  # blocks 2-3 of 3 (paper: 20-39 of 39)
    assert enc.adapter_query.shape == (2, 4, WIDTH) and enc.gates.shape == (2, HEADS)
    images = _images()
    objects = encode_crops(clip.visual, _images(6, seed=1)).view(2, 3, WIDTH)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    reference = _block_outputs(clip.visual.trunk, images)[-1][:, 0]  # raw last-block CLS
    untouched = []
    run = enc.trunk.run
    enc.trunk.run = lambda blk, x: (untouched.append(enc.trunk.blocks.index(blk)), run(blk, x))[1]
    with torch.no_grad():
        cls, prefix = enc(images, objects, mask)
    assert untouched == [0]  # block 1 runs as timm's; blocks 2-3 carry the prefix
    if dual_flow:  # zero gates: exactly the frozen EVA (up to the attention kernel's rounding)
        torch.testing.assert_close(cls, reference, atol=1e-5, rtol=1e-5)
    else:  # the joint softmax changes the output from the start: the prefix is really used
        assert not torch.allclose(cls, reference, atol=1e-4)
    assert torch.equal(prefix, enc.adapter_query[-1] + enc.pad_objects(objects, mask)[0])
    # object features are EVA's raw CLS of each crop, through the same blocks, no prefix
    crops = _images(3, seed=2)
    torch.testing.assert_close(encode_crops(clip.visual, crops),
                               _block_outputs(clip.visual.trunk, crops)[-1][:, 0],
                               atol=1e-5, rtol=1e-5)


def test_eva_prefix_keys_and_values_match_timm_attention_over_the_joined_sequence(eva_file):
    """Brute-force reference for the prefix wiring (the block's own qkv, its (q, 0, v) biases,
    no norm on the prefix): with one joint softmax (``dual_flow=False``) and every slot filled, a
    prefixed block equals timm's own attention run over [LN1(x); P], read at the image tokens."""
    clip, _ = create_clip(_eva_cfg(eva_file[0]), Path("unused"))
    enc = PrefixViT(clip.visual, prefix_len=4, dual_flow=False)
    blk = enc.trunk.blocks[-1]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, WIDTH, generator=g)  # CLS + 2x2 patches
    prefix = torch.randn(2, 4, WIDTH, generator=g)
    with torch.no_grad():
        mine = enc.block(blk, x, prefix, keep=None, gate=None)
        a = blk.attn(torch.cat([blk.norm1(x), prefix], dim=1))[:, :x.shape[1]]
        ref = x + a
        ref = ref + blk.mlp(blk.norm2(ref))
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)


def test_eva_prefix_trains_through_every_prefixed_block(eva_file):
    clip, _ = create_clip(_eva_cfg(eva_file[0]), Path("unused"))
    enc = PrefixViT(clip.visual, prefix_len=4)
    with torch.no_grad():
        enc.gates.fill_(0.1)
    objects = torch.randn(2, 3, WIDTH)
    cls, _ = enc(_images(), objects, torch.ones(2, 3, dtype=torch.bool))
    cls.square().sum().backward()
    per_block = enc.adapter_query.grad.abs().sum(dim=(1, 2))
    assert (per_block > 0).all() and (enc.gates.grad.abs().sum(1) > 0).all()
    assert all(p.grad is None for p in clip.visual.parameters())  # EVA stays frozen


def test_eva_errors_name_the_file_and_where_it_is_published(eva_file, tmp_path):
    with pytest.raises(eva.VisionWeightsError, match="nope.bin not found.*huggingface.co/timm"):
        create_clip(_eva_cfg(tmp_path / "nope.bin"), tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(eva.VisionWeightsError, match="cannot read .*junk.bin"):
        create_clip(_eva_cfg(junk), tmp_path)
    state = dict(eva_file[1])
    state["visual.trunk.pos_embed"] = torch.zeros(1, 17, WIDTH)  # a 56-px tower's positions
    del state["visual.trunk.blocks.3.mlp.fc2.bias"]
    wrong = tmp_path / "wrong.bin"
    torch.save(state, wrong)
    with pytest.raises(eva.VisionWeightsError, match=r"wrong shape: visual.trunk.pos_embed"
                                                     r".*missing: visual.trunk.blocks.3"):
        create_clip(_eva_cfg(wrong), tmp_path)
    # the older open_clip layout (text keys at the top level) loads as open_clip loads it
    old = {k.removeprefix("text."): v for k, v in eva_file[1].items()}
    torch.save(old, tmp_path / "old.bin")
    clip, _ = create_clip(_eva_cfg(tmp_path / "old.bin"), tmp_path)
    assert torch.equal(clip.text.token_embedding.weight,
                       eva_file[1]["text.token_embedding.weight"])
    with pytest.raises(eva.VisionWeightsError, match="vit_layers=9 but the tower has 4 blocks"):
        create_clip(dataclasses.replace(_eva_cfg(eva_file[0]), vit_layers=9), tmp_path)
    with pytest.raises(eva.VisionWeightsError, match="neither 'tiny_vit' nor an open_clip"):
        create_clip(dataclasses.replace(_eva_cfg(eva_file[0]), vision="eva99"), tmp_path)


# ------------------------------------------------------------------------------ LLaMA
def test_llama_folder_loads_with_its_own_sentencepiece_tokenizer(llama_dir):
    cfg = gemkr.get_config("paper", llm=str(llama_dir))
    assert cfg.tokenizer == str(llama_dir)  # the index is built with LLaMA's tokenizer (T6)
    tok = load_tokenizer(cfg.tokenizer)
    sp = specials(tok)
    assert (sp.bos, sp.eos) == (1, 2) and word_prefix(tok) == ""  # word-start marks, no prefix
    ids = encode_passages(tok, PASSAGES[:1])[0].tolist()
    assert tok.convert_ids_to_tokens(ids[:1])[0].startswith("\u2581")  # "▁the", as mid-text
    llm = build_llm(cfg, sp)
    assert llm.config.vocab_size == len(tok) and llm.config.num_hidden_layers == 2


def test_llm_errors_are_named(llama_dir, tmp_path):
    sp = specials(load_tokenizer(str(llama_dir)))
    with pytest.raises(LLMFileError, match="missing.*LLaMA"):
        build_llm(gemkr.get_config("paper", llm=str(tmp_path / "nope")), sp)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"x")
    with pytest.raises(LLMFileError, match="no config.json: not a Hugging Face model folder"):
        build_llm(gemkr.get_config("paper", llm=str(tmp_path / "weights")), sp)
    other = specials(load_tokenizer("smollm2"))  # SmolLM2's 49,152 ids into a 300-id LLaMA
    with pytest.raises(TokenizerMismatchError, match="49152 ids, the LLM's vocabulary"):
        build_llm(gemkr.get_config("paper", llm=str(llama_dir)), other)
    swapped = type(sp)(bos=sp.eos, eos=sp.bos, pad=sp.pad, vocab_size=sp.vocab_size)
    with pytest.raises(TokenizerMismatchError, match="BOS is 2 in the tokenizer, 1"):
        build_llm(gemkr.get_config("paper", llm=str(llama_dir)), swapped)
    with pytest.raises(FileNotFoundError, match="tokenizer folder"):
        load_tokenizer(str(tmp_path / "weights"))


def test_paper_code_path_trains_a_step_and_decodes_real_text(eva_file, llama_dir):
    """The pieces `trained.pipeline` joins in `paper`: EVA tower (`create_clip`), LLaMA folder
    (`build_llm`), LLaMA's tokenizer for the index and the clue targets, `assemble` (prefix,
    visual tokens, LoRA), one optimizer step, one constrained decode."""
    cfg = _eva_cfg(eva_file[0], llm=str(llama_dir), prefix_len=4)
    tok = load_tokenizer(cfg.tokenizer)
    sp = specials(tok)
    index = CorpusIndex.build(encode_passages(tok, PASSAGES), eos=sp.eos, bos=sp.bos)
    clip, _ = create_clip(cfg, Path("unused"))
    torch.manual_seed(0)
    model = trained.assemble(cfg, clip, build_llm(cfg, sp), tok, sp)
    table = model.trainable_parameters()
    assert table == closed_form_trainable(cfg, 32, 2), table
    images = _images(2)
    objects = encode_crops(clip.visual, _images(4, seed=3)).view(2, 2, WIDTH)
    targets = [index.passage_tokens(0)[:4].tolist(), index.passage_tokens(2)[:4].tolist()]
    batch = Batch(images, objects, torch.ones(2, 2, dtype=torch.bool),
                  ["what family is it in? a picture of a fox", "what does it make? a bee"],
                  targets)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss = model(batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = [n for n, p in model.named_parameters() if p.requires_grad
             and not torch.equal(p, trainable[n])]
    assert any("lora_" in n for n in moved) and any("visual_tokens" in n for n in moved)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters()
               if not p.requires_grad)
    model.eval()
    dcfg = DecodeConfig(num_beams=4, num_beam_groups=2, max_clue_tokens=5, min_clue_tokens=2)
    clues = model.retrieve(batch, index, dcfg)
    assert len(clues) == 2 and all(clues)
    texts = [" ".join(PASSAGES)]
    for per_query in clues:
        for clue in per_query:
            assert index.count(clue.tokens) > 0  # every clue is real text of a passage
            assert clue_text(tok, clue.tokens) in texts[0]  # [eos] dropped


# ------------------------------------------------------------------------------ YOLO
def test_yolo_weights_must_be_an_ultralytics_detector(tmp_path):
    detect._offline_ultralytics()
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(tmp_path / "det.pt")
    YOLO("yolov8n-cls.yaml").save(tmp_path / "cls.pt")
    assert detect.load_yolo(tmp_path / "det.pt").task == "detect"
    cfg = gemkr.get_config("paper", yolo_weights=str(tmp_path / "det.pt"))
    weights, log, seconds = detect.trained_detector(cfg, bench=None)  # the user's, untrained
    assert weights == tmp_path / "det.pt" and log.empty and seconds == 0.0
    # labels come from the detector's own classes where the benchmark has no object table (COCO)
    from types import SimpleNamespace

    import pandas as pd
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 30, 200)).save(tmp_path / "scene.jpg")
    bench = SimpleNamespace(objects=pd.DataFrame(), scenes=pd.DataFrame(
        {"scene_id": [7], "image_path": [str(tmp_path / "scene.jpg")]}))
    model = detect.load_yolo(tmp_path / "det.pt")
    dets, _ = detect.predict(model, bench, imgsz=64, conf=0.0, max_det=3)
    assert len(dets) == 3 and set(dets["label"]) <= set(model.names.values())
    with pytest.raises(detect.DetectorFileError, match="'classify' model.*task 'detect'"):
        detect.load_yolo(tmp_path / "cls.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(detect.DetectorFileError, match="junk.pt is not an ultralytics"):
        detect.load_yolo(tmp_path / "junk.pt")
    with pytest.raises(detect.DetectorFileError, match="nope.pt not found.*ultralytics"):
        detect.load_yolo(tmp_path / "nope.pt")


# ------------------------------------------------------------------------------ full size
def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _eva_g_closed_form(depth: int = 39, w: int = 1408, mlp: int = 6144, patch: int = 14) -> int:
    """EVA ViT-g as GeMKR builds it (paper-notes §2): patch embedding, CLS, 257 positions and
    `depth` blocks (norms, fused qkv with q/v biases, projection, MLP); no final norm, no head."""
    block = 2 * w + 3 * w * w + 2 * w + (w * w + w) + 2 * w + (w * mlp + mlp) + (mlp * w + w)
    return (3 * patch * patch * w + w) + w + 257 * w + depth * block


@pytest.mark.parametrize("llm, hidden, layers, inter, total_llm, trainable", [
    ("7B", 4096, 32, 11008, 6_738_415_616, 10_247_488),
    ("13B", 5120, 40, 13824, 13_015_864_320, 14_049_600),  # the "14M" of the paper (§6)
])
def test_full_size_architectures_on_meta(llm, hidden, layers, inter, total_llm, trainable):
    import transformers

    cfg = gemkr.get_config("paper")
    clip = eva.build_eva_clip(cfg, device="meta")
    trunk = clip.visual.trunk
    assert len(trunk.blocks) == 40 and trunk.embed_dim == 1408  # open_clip's EVA01-g-14
    trunk.blocks = trunk.blocks[:cfg.vit_layers]
    used = _count(trunk) - _count(trunk.norm) - _count(trunk.head)  # the final norm and head
    assert used == _eva_g_closed_form() == 985_894_528  # paper-notes §2: 985.9 M as built
    conf = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=inter,
                                    num_hidden_layers=layers, num_attention_heads=hidden // 128,
                                    num_key_value_heads=hidden // 128, vocab_size=32000)
    with torch.device("meta"):
        model_llm = transformers.LlamaForCausalLM(conf)
    assert _count(model_llm) == total_llm
    with torch.device("meta"):
        model = trained.assemble(cfg, clip, model_llm, tok=None,
                                 sp=specials_like(bos=1, eos=2, vocab=32000))
    table = model.trainable_parameters()
    assert model.encoder.n_prefix == 20 and model.encoder.first == 19  # blocks 20-39
    assert table == closed_form_trainable(cfg, hidden, layers)
    assert sum(table.values()) == trainable
    assert table["prefix_rows"] == 281_600 and table["gates"] == 320


def specials_like(bos: int, eos: int, vocab: int):
    from gemkr.tokenizer import Specials

    return Specials(bos, eos, 0, vocab)


@pytest.mark.gpu
def test_small_profile_end_to_end_on_gpu():
    """`small` (SmolLM2-135M at full depth, no stage 2) on the built-in benchmark: notebooks
    01-09 through run_all.sh on a CUDA GPU (DEVICE="auto" picks it); GeMKR must beat the random
    ranking on the test split of the largest KB, by gold passage."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    out = subprocess.run(["./run_all.sh", "--profile", "small"], cwd=ROOT)
    assert out.returncode == 0
    manifest = json.loads((ROOT / "results" / "small" / "manifest.json").read_text())
    assert all(r["status"] in ("ok", "skipped") for r in manifest["notebooks"].values())
    import pandas as pd

    table = pd.read_csv(ROOT / "results" / "small" / "05_main_results.csv")
    test = table[(table["kb"] == table["kb"].iloc[-1]) & (table["split"] == "test")
                 & (table["relevance"] == "gold_id")].set_index("method")
    assert test.loc["GeMKR", "R@5"] > test.loc["random", "R@5"] + 0.05
    assert np.isfinite(test.loc["GeMKR", "R@1"])
