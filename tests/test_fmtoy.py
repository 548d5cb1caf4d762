"""Notebook 03's textbook FM-index against brute force and against `gemkr.index`."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gemkr import fmtoy
from gemkr.index import CorpusIndex

EOS, BOS = 9, 8
docs_st = st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=8), min_size=1, max_size=4)
pattern_st = st.lists(st.integers(1, 6), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(docs_st, pattern_st)
def test_backward_search_is_the_suffix_interval_and_counts_like_the_index(docs, pattern):
    text = fmtoy.stream(docs, EOS)
    sa = fmtoy.suffix_array(text)
    starts = [r for r, i in enumerate(sa) if text[i:i + len(pattern)] == pattern]
    lo, hi = fmtoy.backward_search(text, pattern)
    assert (lo, hi) == ((starts[0], starts[-1] + 1) if starts else (0, 0))
    index = CorpusIndex.build(docs, eos=EOS, bos=BOS, vocab_size=16)
    assert hi - lo == index.count(pattern)
    by_index = sorted({int(index.number_of(p)) for p in index.docs(pattern)})
    assert fmtoy.passages_of(text, EOS, lo, hi) == by_index


def test_steps_narrow_the_interval_with_c_and_occ():
    text = fmtoy.stream([[3, 1, 2], [3, 1, 2, 2]], EOS)
    steps = fmtoy.backward_steps(text, [1, 2])
    assert [s["token"] for s in steps] == [None, 2, 1]  # read right to left
    widths = [s["hi"] - s["lo"] for s in steps]
    assert widths == [len(text), 3, 2] and widths == sorted(widths, reverse=True)
    c, occ = fmtoy.c_table(text), fmtoy.occ_table(text)
    # C[a] counts the smaller tokens: the sentinel < 1 < 2 < 3 < the separator
    assert c == {fmtoy.SENTINEL: 0, 1: 1, 2: 3, 3: 6, EOS: 8}
    assert occ.shape == (len(text) + 1, len(c)) and occ.iloc[-1].to_dict() == {
        fmtoy.SENTINEL: 1, 1: 2, 2: 3, 3: 2, EOS: 2}
    assert fmtoy.backward_search(text, [4]) == fmtoy.backward_search(text, [2, 3]) == (0, 0)


def test_masked_step_renormalises_over_the_allowed_tokens():
    import numpy as np
    import torch

    from gemkr.explore import masked_step

    class Tok:
        def decode(self, ids):
            return f"t{ids[0]}"

    logp = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 3.0, 0.5, 4.0]), -1)
    table = masked_step(logp, np.array([1, 2, 4]), Tok(), top=2)
    p = logp.exp()
    assert table["token"].tolist() == ["t2", "t1", "(1 other allowed tokens)"]
    assert np.allclose(table["p (whole vocabulary)"], [p[2], p[1], p[4]])
    kept = np.array([p[2], p[1], p[4]])
    assert np.allclose(table["p (allowed only)"], kept / kept.sum())
    assert len(masked_step(logp, np.array([1, 2]), Tok(), top=5)) == 2  # nothing left over
