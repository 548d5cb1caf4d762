"""Reading probes: does the LLM's output follow its prompt? (notebook 04, issue of the CPU profile)

GeMKR presumes an LLM that *reads*: given the instruction template with a question and a caption
that names the scene's objects, its first response token should be the name of one of them. The
probes measure exactly that, with nothing of the answer handed over:

- ``object_named``: after the template (question + detector caption, then the response header),
  the next-token logit of the first token of each caption object's name is compared with the first
  tokens of `n_distractors` random objects absent from the scene; the share of questions where a
  caption object ranks first. Chance: objects / (objects + distractors). Run on the LLM as it
  enters GeMKR tuning (no visual tokens, no LoRA) and on the tuned GeMKR (with its visual tokens).
- ``clue_names_object`` (tuned GeMKR): share whose best constrained clue starts with the name of
  one of the caption's objects.
- ``gold_top5_named_alone`` (tuned GeMKR): among questions whose caption names the gold object
  and nothing else, the share with the gold passage in the top 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .tokenizer import clue_text, word_prefix


@dataclass(frozen=True)
class ProbeItem:
    text: str  # model input: question + caption
    named: tuple[int, ...]  # first tokens of the caption objects' names
    distractors: tuple[int, ...]  # first tokens of absent objects' names


def first_token(tok, name: str) -> int:
    """The first token id of `name` as a clue starts it (a passage's opening, encoded as the
    index encodes passages: `tokenizer.word_prefix`)."""
    return int(tok(word_prefix(tok) + name, add_special_tokens=False)["input_ids"][0])


def scene_labels(dets: pd.DataFrame, min_score: float = 0.0) -> dict[int, list[str]]:
    """scene id -> the detector's labels with a score >= `min_score` (`caption_conf`) in
    confidence order, without repeats (the caption's objects)."""
    from .detect import labels_by_scene

    return {s: list(dict.fromkeys(v)) for s, v in labels_by_scene(dets, min_score).items()}


def probe_questions(questions: pd.DataFrame, labels: dict[int, list[str]], n: int,
                    seed: int) -> pd.DataFrame:
    """A fixed sample of `n` questions whose caption names at least one object, with a
    ``named`` column (the caption's object names)."""
    named = questions["scene_id"].map(lambda s: labels.get(int(s), []))
    q = questions.assign(named=named)[named.map(len) > 0]
    if len(q) > n:
        q = q.sample(n=n, random_state=seed).sort_index()
    return q.reset_index(drop=True)


def probe_items(questions: pd.DataFrame, tok, object_names: list[str], n_distractors: int,
                seed: int) -> list[ProbeItem]:
    """One item per question of `probe_questions`: the caption objects' first tokens against
    those of `n_distractors` random objects that are not in the scene and whose first token
    differs from every caption object's."""
    rng = np.random.default_rng([seed, 4, 9])
    first = {name: first_token(tok, name) for name in dict.fromkeys(object_names)}
    pool = list(first)
    items = []
    for text, named in zip(questions["text"], questions["named"], strict=True):
        ids = tuple(dict.fromkeys(first.get(x) or first_token(tok, x) for x in named))
        others = [first[x] for x in rng.permutation(pool) if x not in named
                  and first[x] not in ids]
        items.append(ProbeItem(text, ids, tuple(dict.fromkeys(others))[:n_distractors]))
    return items


def named_first(logits: torch.Tensor, items: list[ProbeItem]) -> tuple[float, float]:
    """(share of items where a caption object's token outranks every distractor, chance)."""
    hits, chance = [], []
    for row, it in zip(logits, items, strict=True):
        cand = torch.as_tensor([*it.named, *it.distractors])
        hits.append(int(row[cand].argmax()) < len(it.named))
        chance.append(len(it.named) / len(cand))
    return float(np.mean(hits)), float(np.mean(chance))


@torch.no_grad()
def llm_next_logits(llm, tok, bos: int, texts: list[str], batch: int = 32) -> torch.Tensor:
    """Next-token logits (N, V) of the bare LLM after the template with each text (no image)."""
    from .model import template_ids

    after = template_ids(tok, bos)[1]
    dev = llm.get_input_embeddings().weight.device
    out = []
    for s in range(0, len(texts), batch):
        seqs = [template_ids(tok, bos, t)[0] + after for t in texts[s:s + batch]]
        n = max(map(len, seqs))
        ids = torch.full((len(seqs), n), bos, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, seq in enumerate(seqs):  # left padding: every prompt ends at the last position
            ids[i, n - len(seq):], mask[i, n - len(seq):] = torch.tensor(seq), 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out.append(llm(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                       position_ids=pos.to(dev), logits_to_keep=1).logits[:, -1].float().cpu())
    return torch.cat(out)


@torch.no_grad()
def gemkr_next_logits(model, inputs: dict, questions: pd.DataFrame, batch: int = 32
                      ) -> torch.Tensor:
    """Next-token logits (N, V) of the tuned GeMKR after its full prompt (visual tokens too)."""
    from .examples import make_batch

    out = []
    for s in range(0, len(questions), batch):
        embeds, mask, _ = model.inputs(make_batch(questions.iloc[s:s + batch], inputs))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out.append(model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                             logits_to_keep=1).logits[:, -1].float().cpu())
    return torch.cat(out)


def clue_names_object(clue_texts: list[str], named: list[list[str]]) -> float:
    """Share of best clues that start with the name of one of the caption's objects."""
    hits = [any(c.lower().startswith(x.lower()) for x in ns)
            for c, ns in zip(clue_texts, named, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def gold_top5_named_alone(questions: pd.DataFrame, ranked: list[list[int]]) -> tuple[float, int]:
    """(share with the gold passage in the top 5, count) over the questions whose caption names
    the gold object and nothing else."""
    alone = [list(ns) == [t] for ns, t in zip(questions["named"], questions["target_name"],
                                               strict=True)]
    hits = [g in r[:5] for g, r, a in zip(questions["gold_pid"], ranked, alone, strict=True) if a]
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def row(model: str, name: str, share: float, questions: int, chance: float = float("nan")) -> dict:
    """One row of ``04_reading_probe.csv``."""
    return {"model": model, "probe": name, "questions": int(questions), "share": float(share),
            "chance": float(chance)}


def llm_rows(model: str, llm, tok, bos: int, questions: pd.DataFrame,
             items: list[ProbeItem]) -> list[dict]:
    """``object_named`` of a bare LLM (no visual tokens, no LoRA)."""
    share, chance = named_first(llm_next_logits(llm, tok, bos, questions["text"].tolist()), items)
    return [row(model, "object_named", share, len(items), chance)]


def gemkr_rows(model, inputs: dict, questions: pd.DataFrame, items: list[ProbeItem], run,
               tok) -> list[dict]:
    """The three probes of the tuned GeMKR; `run` is its constrained decoding of `questions`
    (an `evaluate.Run`) on the largest KB."""
    share, chance = named_first(gemkr_next_logits(model, inputs, questions), items)
    best = [clue_text(tok, c[0].tokens) if c else "" for c in run.clues]
    alone, n_alone = gold_top5_named_alone(questions, run.ranked)
    return [row("tuned GeMKR", "object_named", share, len(items), chance),
            row("tuned GeMKR", "clue_names_object",
                clue_names_object(best, questions["named"].tolist()), len(items)),
            row("tuned GeMKR", "gold_top5_named_alone", alone, n_alone)]


def share(table, model: str, name: str = "object_named") -> float:
    """The share of one probe row (`table`: rows of `row`, as a list or a DataFrame)."""
    t = pd.DataFrame(table)
    hit = t[(t["model"] == model) & (t["probe"] == name)]
    return float(hit["share"].iloc[0]) if len(hit) else float("nan")


@torch.no_grad()
def object_naming(model, inputs: dict, objects: pd.DataFrame, target_of: dict[int, list[int]],
                  n_distractors: int = 20, seed: int = 0, batch: int = 64, bf16: bool = False
                  ) -> tuple[float, float]:
    """``image_names_object``: with one object's token alone at ``<ImageHere>`` (no question, no
    caption), is its own clue more likely (mean log-probability per token, teacher-forced, EOS
    included) than the clues of `n_distractors` random other objects? `objects` are rows
    (row, slot, pid) of `examples.alignment_objects`, `target_of` maps every candidate passage to
    its clue ids. Returns (share, chance). The direct measure of what the alignment stage
    teaches: that a visual token says which object it shows. `bf16`: the LLM's products under
    bfloat16 autocast (pass True only where `hardware.bf16_native`; 6,300 sequences per probe
    take minutes in float32 on 2 cores), the log-probabilities in float32."""
    from .hardware import autocast
    from .model import IGNORE, Batch

    rng = np.random.default_rng([seed, 4, 6])
    pool = np.asarray(sorted(target_of))
    pairs = []
    for i, pid in enumerate(objects["pid"].tolist()):
        others = rng.choice(pool[pool != pid], size=min(n_distractors, len(pool) - 1),
                            replace=False)
        pairs += [(i, int(c)) for c in (pid, *others)]
    rows = torch.tensor(objects["row"].to_numpy(dtype=np.int64))
    slots = torch.tensor(objects["slot"].to_numpy(dtype=np.int64))
    geometry = inputs.get("geometry")
    scores = np.empty(len(pairs))
    for s in range(0, len(pairs), batch):
        part = pairs[s:s + batch]
        at = torch.tensor([i for i, _ in part])
        r, k = rows[at], slots[at]
        visual = model.visual_tokens.object_tokens(
            inputs["objects"][r, k][:, None], None if geometry is None else geometry[r, k][:, None])
        b = Batch(images=None, objects=None, mask=None, texts=[""] * len(part),
                  targets=[target_of[c] for _, c in part])
        embeds, mask, labels = model.inputs(b, visual=visual)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # left padding puts every target at the end: as `GeMKR.forward`, run the output layer
        # (49K rows) only on the last longest-target + 1 positions, not on the whole prompt
        keep = int((labels != IGNORE).sum(1).max()) + 1
        with autocast(embeds.device, bf16):
            logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                               logits_to_keep=keep).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        lab = labels[:, -(keep - 1):]
        real = lab != IGNORE
        tok = logp.gather(-1, lab.clamp(min=0)[..., None]).squeeze(-1) * real
        scores[s:s + len(part)] = (tok.sum(1) / real.sum(1)).cpu().numpy()
    per = 1 + min(n_distractors, len(pool) - 1)
    grouped = scores.reshape(-1, per)
    hits = grouped[:, 0] > grouped[:, 1:].max(1)
    return float(hits.mean()) if len(hits) else float("nan"), 1.0 / per
