"""LLM knowledge pretraining: passage openings, the KB-vocabulary loss, recall sequences and the
verbatim-completion measure, each against a direct computation."""

import numpy as np
import torch
import transformers

from gemkr import knowledge, train
from gemkr.index import CorpusIndex
from gemkr.model import PROMPT
from gemkr.tokenizer import load_tokenizer, specials


def tiny_llm(vocab: int = 40) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))


def test_passage_starts_carry_eos_only_where_the_passage_ends():
    docs = [np.array([5, 6, 7]), np.array([8, 9, 10, 11, 12, 13])]
    index = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=20, progress=False)
    short, cut = knowledge.passage_starts(index, [0, 1], max_tokens=5)
    assert short.tolist() == [5, 6, 7, 2] and cut.tolist() == [8, 9, 10, 11, 12]


def test_kb_vocabulary_loss_equals_full_softmax_when_every_token_is_used():
    llm = tiny_llm(12)
    rng = np.random.default_rng(0)
    docs = [np.arange(3, 12), rng.integers(3, 12, 7)]
    batch = next(train.lm_batches(docs, 2, rng, bos=1, eos=2, pad=0))
    vocab = knowledge.OutputVocab(docs + [np.array([0, 1])], eos=2, vocab_size=12)
    full = llm(**batch).loss
    assert torch.allclose(knowledge.lm_loss_over(llm, batch, vocab), full, atol=1e-5)
    small = knowledge.OutputVocab(docs, eos=2, vocab_size=12)  # ids 0 and 1 left out
    assert knowledge.lm_loss_over(llm, batch, small) <= full + 1e-6


def test_recall_sequences_name_the_entry_and_label_its_passage_only():
    tok = load_tokenizer("smollm2")
    sp = specials(tok)
    texts = ["teapot: pot for brewing tea", "owl: nocturnal bird of prey",
             "harp: a chordophone"]
    docs = [np.asarray(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    names = [knowledge.passage_name(t) for t in texts]
    assert names == ["teapot", "owl", "harp"]
    batch = next(knowledge.recall_batches(docs, names, tok, sp.bos, sp.pad, 3,
                                          np.random.default_rng(0)))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"],
                                 strict=True):
        seq = ids[mask.bool()].tolist()
        target = labels[labels != -100].tolist()
        answer = next(i for i, d in enumerate(docs) if d.tolist() == target)
        prompt = tok.decode(seq[:len(seq) - len(target)])
        assert names[answer] in prompt.split("### Image:")[0], "the answer is named in the input"
        assert prompt.endswith(PROMPT.split("<ImageHere>")[1]) and seq[0] == sp.bos


class Successor(torch.nn.Module):
    """A stand-in LM whose greedy next token is (last token + 1) mod V."""

    def __init__(self, vocab: int = 30):
        super().__init__()
        self.vocab = vocab
        self.emb = torch.nn.Embedding(vocab, 2)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, logits_to_keep=1):
        logits = torch.nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float()
        return transformers.modeling_outputs.CausalLMOutput(logits=logits[:, -logits_to_keep:])


def test_verbatim_share_counts_exact_completions():
    lm = Successor()
    docs = [np.arange(3, 12), np.arange(5, 9), np.array([3, 4, 9, 9, 9, 9, 9, 9])]
    starts = [[1], [1, 2], [1]]  # different context lengths are batched apart
    assert knowledge.verbatim_share(lm, docs[:2], starts[:2]) == 1.0
    assert knowledge.verbatim_share(lm, docs, starts) == 2 / 3


def test_shared_template_prefix_gives_the_same_loss_and_gradients():
    """Recall sequences share the template's opening; running it once for the batch must not
    change the loss or its gradients (right-padded sequences of mixed lengths)."""
    tok = load_tokenizer("smollm2")
    sp = specials(tok)
    texts = ["teapot: pot for brewing tea", "owl: nocturnal bird of prey with hawk-like beak",
             "harp: a chordophone", "ant: social insect"]
    docs = [np.asarray(tok(t, add_special_tokens=False)["input_ids"])[:6] for t in texts]
    names = [knowledge.passage_name(t) for t in texts]
    batch = next(knowledge.recall_batches(docs, names, tok, sp.bos, sp.pad, 4,
                                          np.random.default_rng(1), fillers=["a b", "c"]))
    n = knowledge.shared_prefix(batch)
    assert n > 20, "the template's opening is shared"
    assert (batch["labels"][:, :n + 1] == -100).all()
    torch.manual_seed(0)
    llm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    vocab = knowledge.OutputVocab(docs, sp.eos, len(tok))
    out = []
    for share in (True, False):
        llm.zero_grad()
        loss = knowledge.lm_loss_over(llm, batch, vocab, share=share)
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in llm.parameters()]))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out[0][1], out[1][1], strict=True))
