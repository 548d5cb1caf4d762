"""Notebook 08's decoding explorer: step through the constrained decoding of one question.

`trace` replays a clue token by token: at each step, which tokens the index allows next, which of
them the model prefers (probability renormalised over the allowed set, as the constrained search
sees them), and how many passages still contain the clue. The ipywidgets front end in notebook 08
only calls this function, so a test can check what a student would see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .index import CorpusIndex
from .model import Batch, GeMKR


@torch.no_grad()
def next_token_logprobs(model: GeMKR, batch: Batch, prefix: list[int]) -> torch.Tensor:
    """Log-probabilities of the next clue token after the prompt of a one-question batch and
    `prefix` (full forward pass; explorer use only)."""
    embeds, mask, _ = model.inputs(Batch(batch.images, batch.objects, batch.mask, batch.texts,
                                         geometry=batch.geometry, captioned=batch.captioned))
    if prefix:
        extra = model.llm.get_input_embeddings()(torch.tensor([prefix], device=embeds.device))
        embeds = torch.cat([embeds, extra], 1)
        mask = torch.cat([mask, mask.new_ones(1, len(prefix))], 1)
    out = model.llm(inputs_embeds=embeds, attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=1)
    return torch.log_softmax(out.logits[0, -1].float(), -1)


def trace(model: GeMKR, batch: Batch, index: CorpusIndex, tokens: list[int], tok,
          top: int = 5, first_token: str = "free") -> pd.DataFrame:
    """One row per step of the clue `tokens`: allowed-set size, passages still containing the
    clue, the model's top allowed tokens (probability over the allowed set) and the token taken.
    ``first_token="prompt name"`` (the profile's `DecodeConfig.first_token`) narrows step 0 to
    the openings of the names the prompt holds, as the search does (`decoding.opening_tokens`)."""
    from .decoding import opening_tokens

    first = model.first_tokens(batch)[0] if first_token == "prompt name" else None
    rows, state = [], index.root()
    for step in range(len(tokens) + 1):
        allowed = index.allowed(state)
        allowed = allowed[allowed < model.llm.get_input_embeddings().weight.shape[0]]
        if step == 0:
            allowed = opening_tokens(allowed, first)
        logp = next_token_logprobs(model, batch, tokens[:step])
        cand = logp[torch.as_tensor(allowed, dtype=torch.long)]
        p = torch.softmax(cand, -1).numpy() if len(allowed) else np.zeros(0)
        best = np.argsort(-p)[:top]
        rows.append({
            "step": step, "clue so far": tok.decode(tokens[:step]),
            "allowed tokens": int(len(allowed)),
            "passages": int(index.num_docs if step == 0 else len(index.state_docs(state))),
            "model's top allowed": ", ".join(f"{tok.decode([int(allowed[i])])!r} {p[i]:.2f}"
                                              for i in best),
            "taken": tok.decode([tokens[step]]) if step < len(tokens) else "(end)"})
        if step < len(tokens):
            state = index.extend(state, int(tokens[step]))
    return pd.DataFrame(rows)


def batch_mode() -> bool:
    """True in papermill / test runs (``GEMKR_BATCH=1``, set by run_all.sh and run_tests.sh)."""
    import os

    return os.environ.get("GEMKR_BATCH") == "1"


def widget(pipeline, questions, index, dcfg):
    """The ipywidgets explorer: pick a test question (or type one for its scene), then step
    through the trace of its top clue (`trace`): the table shows the steps up to `step`."""
    import ipywidgets as w
    from IPython.display import display

    from .detect import input_text
    from .evaluate import gemkr_search
    from .examples import make_batch

    pick = w.Dropdown(options=[(f"{q.qid}: {q.question}", i) for i, q in
                               enumerate(questions.itertuples())], description="question",
                      layout=w.Layout(width="95%"))
    typed = w.Text(placeholder="or type a question about this scene", description="ask")
    step = w.IntSlider(min=0, max=0, value=0, description="step")
    out = w.Output()
    current: dict = {}

    def render(*_):
        if current.get("busy"):  # a new question is being set up: decode() renders once at its end
            return
        with out:
            out.clear_output(wait=True)  # cleared when the new output arrives: no empty frame
            print("input:", current["text"])
            display(current["trace"].iloc[: step.value + 1])

    def decode(*_):
        q = questions.iloc[[pick.value]].copy()
        if typed.value.strip():
            q["text"] = input_text(typed.value.strip(), q["caption"].iloc[0])
        run = gemkr_search(pipeline.model, pipeline.inputs, q, index, dcfg)
        tokens = list(run.clues[0][0].tokens) if run.clues[0] else []
        current.update(text=q["text"].iloc[0], trace=trace(
            pipeline.model, make_batch(q, pipeline.inputs), index, tokens, pipeline.tok,
            first_token=dcfg.first_token))
        last = len(current["trace"]) - 1
        current["busy"] = True  # moving the slider to the new end must not render a second time
        try:
            step.max, step.value = last, last
        finally:
            current["busy"] = False
        render()

    pick.observe(decode, "value")
    typed.on_submit(decode)
    step.observe(render, "value")
    decode()
    return w.VBox([pick, typed, step, out])


def masked_step(logprobs: torch.Tensor, allowed: np.ndarray, tok, top: int = 8) -> pd.DataFrame:
    """One constrained decoding step made visible: the `top` allowed tokens by the model's
    probability over the whole vocabulary and after the mask (every other token's logit set to
    -inf, so the allowed ones share all the probability); the last row sums up the rest."""
    p_all = torch.softmax(logprobs.float(), -1)
    ids = torch.as_tensor(np.asarray(allowed, dtype=np.int64))
    p_in = p_all[ids]
    p_masked = p_in / p_in.sum()
    order = torch.argsort(p_masked, descending=True)[:top]
    rows = [{"token": tok.decode([int(ids[i])]), "p (whole vocabulary)": float(p_in[i]),
             "p (allowed only)": float(p_masked[i])} for i in order]
    rest = torch.ones_like(p_masked, dtype=torch.bool)
    rest[order] = False
    if rest.any():
        rows.append({"token": f"({int(rest.sum())} other allowed tokens)",
                     "p (whole vocabulary)": float(p_in[rest].sum()),
                     "p (allowed only)": float(p_masked[rest].sum())})
    return pd.DataFrame(rows)
