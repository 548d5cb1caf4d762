"""CorpusIndex against a brute-force reference (count, docs, continuations), shards, save/load."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemkr import shard as index_mod
from gemkr.index import CorpusIndex, IndexError_, suffix_array


class Brute:
    """The obvious O(n * m) reference: matches inside each stored passage [bos] doc [eos]."""

    def __init__(self, docs, eos, bos):
        self.passages = [([bos] if bos is not None else []) + list(d) + [eos] for d in docs]
        self.stream = [t for p in self.passages for t in p]

    def count(self, p):
        m = len(p)
        if m == 0:
            return len(self.stream)
        return sum(d[i:i + m] == p for d in self.passages for i in range(len(d) - m + 1))

    def docs(self, p):
        m = len(p)
        return [j for j, d in enumerate(self.passages)
                if any(d[i:i + m] == p for i in range(len(d) - m + 1))]

    def continuations(self, p):
        m = len(p)
        return sorted({d[i + m] for d in self.passages for i in range(len(d) - m)
                       if d[i:i + m] == p})


def _patterns(brute, rng, n):
    out = [[]]
    for _ in range(n):
        m = int(rng.integers(1, 8))
        if rng.random() < 0.75:  # real n-grams (incl. ones ending at EOS)
            j = int(rng.integers(0, len(brute.stream)))
            out.append(brute.stream[j:j + m])
        else:  # mostly absent ones
            out.append(rng.integers(0, 40, size=m).tolist())
    return out


def _check(idx, brute, patterns):
    for p in patterns:
        assert idx.count(p) == brute.count(p), p
        assert idx.continuations(p).tolist() == brute.continuations(p), p
        if p:
            assert idx.docs(p).tolist() == brute.docs(p), p


corpora = st.lists(st.lists(st.integers(3, 39), min_size=1, max_size=12), min_size=1,
                   max_size=40)


@settings(max_examples=60, deadline=None)
@given(docs=corpora, seed=st.integers(0, 2**16), with_bos=st.booleans(),
       shard=st.sampled_from([None, 16, 40]))
def test_matches_brute_force(docs, seed, with_bos, shard):
    bos = 1 if with_bos else None
    idx = CorpusIndex.build(docs, eos=2, bos=bos, vocab_size=40, shard_tokens=shard,
                            progress=False)
    brute = Brute(docs, 2, bos)
    _check(idx, brute, _patterns(brute, np.random.default_rng(seed), 40))


@pytest.mark.parametrize("materialize, wide, narrow",
                         [(0, 1 << 11, 128), (1 << 15, 0, 0), (0, 0, 1 << 20), (8, 4, 2)])
def test_every_interval_path_agrees(monkeypatch, materialize, wide, narrow):
    """Force the gallop path (MATERIALIZE=0), child tables for every parent (WIDE=0, NARROW=0)
    or none at level 1 (NARROW huge), and compare with brute force each time."""
    rng = np.random.default_rng(3)
    docs = [rng.integers(3, 6, size=rng.integers(2, 30)).tolist() for _ in range(300)]
    brute = Brute(docs, 2, 1)
    patterns = _patterns(brute, rng, 150)
    monkeypatch.setattr(index_mod, "MATERIALIZE", materialize)
    monkeypatch.setattr(index_mod, "WIDE", wide)
    monkeypatch.setattr(index_mod, "NARROW", narrow)
    _check(CorpusIndex.build(docs, eos=2, bos=1, vocab_size=40, progress=False), brute, patterns)


def test_real_corpus_tokens():
    """A real tokenised corpus (byte-level tokens of WordNet-style passages, vocab > 255)."""
    texts = ["banana: elongated crescent-shaped yellow fruit with soft sweet flesh",
             "banana, banana tree: any of several tropical and subtropical treelike herbs",
             "apple: fruit with red or yellow or green skin and sweet to tart crisp flesh"] * 3
    docs = [[300 + b for b in t.encode()] for t in texts]
    idx = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=600, progress=False)
    brute = Brute(docs, 2, 1)
    _check(idx, brute, _patterns(brute, np.random.default_rng(0), 200))
    banana = [300 + b for b in b"banana"]
    assert idx.docs(banana).tolist() == [0, 1, 3, 4, 6, 7]
    assert idx.continuations(banana).tolist() == sorted(300 + ord(c) for c in ": ,")


def test_sharded_equals_unsharded_and_ids_map():
    rng = np.random.default_rng(1)
    docs = [rng.integers(3, 30, size=rng.integers(1, 20)).tolist() for _ in range(120)]
    ids = rng.permutation(1000)[:120]
    one = CorpusIndex.build(docs, eos=2, ids=ids, vocab_size=40, progress=False)
    many = CorpusIndex.build(docs, eos=2, ids=ids, vocab_size=40, shard_tokens=50,
                             progress=False)
    assert len(many.shards) > 5 and one.num_tokens == many.num_tokens
    for p in _patterns(Brute(docs, 2, None), rng, 80):
        assert one.count(p) == many.count(p)
        assert one.docs(p).tolist() == many.docs(p).tolist()
        assert one.continuations(p).tolist() == many.continuations(p).tolist()
    assert one.docs(docs[5]).tolist()[0] in ids


def test_state_api_and_uniqueness():
    docs = [[5, 6, 7], [5, 6, 8], [9, 5, 6, 7, 7]]
    idx = CorpusIndex.build(docs, eos=2, progress=False)
    st0 = idx.root()
    assert idx.allowed(st0).tolist() == [2, 5, 6, 7, 8, 9]
    st1 = idx.extend(idx.extend(st0, 5), 6)
    assert st1.count == 3 and idx.allowed(st1).tolist() == [7, 8]
    assert not idx.is_unique(st1)
    st2 = idx.extend(st1, 8)
    assert idx.is_unique(st2) and idx.state_docs(st2).tolist() == [1]
    assert idx.allowed(st2).tolist() == [2], "EOS where the clue ends a passage"
    assert idx.extend(st2, 9).count == 0
    with pytest.raises(IndexError_, match="token id 99"):
        idx.extend(st0, 99)


def test_suffix_array_dtypes_match_sorting():
    rng = np.random.default_rng(0)
    for dtype, hi in ((np.uint8, 200), (np.uint16, 60_000), (np.uint32, 100_000)):
        text = rng.integers(0, hi, size=500).astype(dtype)
        text[100:120] = text[300:320]
        before = text.copy()
        sa = suffix_array(text)
        assert np.array_equal(text, before), "input restored after the in-place byteswap"
        assert sa.tolist() == sorted(range(text.size), key=lambda i: text[i:].tolist())


def test_save_load_roundtrip_mmap_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    docs = [rng.integers(3, 300, size=rng.integers(1, 15)).tolist() for _ in range(60)]
    idx = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=300, shard_tokens=200,
                            progress=False)
    idx.save(tmp_path / "ix")
    for mmap in (True, False):
        back = CorpusIndex.load(tmp_path / "ix", mmap=mmap)
        assert isinstance(back.shards[0].sa, np.memmap) == mmap
        for p in _patterns(Brute(docs, 2, 1), rng, 40):
            assert back.count(p) == idx.count(p)
            assert back.continuations(p).tolist() == idx.continuations(p).tolist()
    f = tmp_path / "ix" / "shard0_sa.npy"
    data = f.read_bytes()
    f.write_bytes(data[:-8])
    with pytest.raises(IndexError_, match="truncated"):
        CorpusIndex.load(tmp_path / "ix")
    f.write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(IndexError_, match="corrupt"):
        CorpusIndex.load(tmp_path / "ix")
    f.write_bytes(data)
    header = json.loads((tmp_path / "ix" / "index.json").read_text())
    (tmp_path / "ix" / "index.json").write_text(json.dumps({**header, "version": 0}))
    with pytest.raises(IndexError_, match="version 0"):
        CorpusIndex.load(tmp_path / "ix")


def test_build_rejects_bad_input():
    with pytest.raises(IndexError_, match="empty corpus"):
        CorpusIndex.build([], eos=2)
    with pytest.raises(IndexError_, match="passage #1 has no tokens"):
        CorpusIndex.build([[3], []], eos=2)
    with pytest.raises(IndexError_, match=r"\[0, 10\)"):
        CorpusIndex.build([[3, 12]], eos=2, vocab_size=10)


def test_passage_tokens_and_numbers():
    docs = [[5, 6, 7], [8], [9, 10]]
    for shard in (None, 5):
        idx = CorpusIndex.build(docs, eos=2, bos=1, ids=[30, 10, 20], vocab_size=16,
                                shard_tokens=shard, progress=False)
        assert [idx.passage_tokens(i).tolist() for i in range(3)] == docs
        assert idx.number_of(20) == 2
        with pytest.raises(IndexError_, match="passage id 99"):
            idx.number_of(99)


def test_content_key_follows_the_content(tmp_path):
    """Caches of models trained on a KB are keyed by the whole index (issue 17), the same for a
    built and a loaded index, and different as soon as one token differs."""
    from gemkr.index import CorpusIndex

    docs = [[5, 6, 7], [8, 9], [5, 9, 9, 6]]
    built = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=16, progress=False)
    built.save(tmp_path / "i")
    loaded = CorpusIndex.load(tmp_path / "i")
    assert built.content_key == loaded.content_key
    other = CorpusIndex.build([[5, 6, 7], [8, 9], [5, 9, 9, 7]], eos=2, bos=1, vocab_size=16,
                              progress=False)
    assert other.content_key != built.content_key
    renamed = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=16, progress=False,
                                ids=np.array([10, 11, 12]))
    assert renamed.content_key != built.content_key


@settings(max_examples=40, deadline=None)
@given(docs=corpora, seed=st.integers(0, 2**16), with_bos=st.booleans(),
       shard=st.sampled_from([16, 40, 10_000]))
def test_streamed_memory_mapped_build_answers_like_the_in_memory_one(tmp_path_factory, docs,
                                                                      seed, with_bos, shard):
    """`build_streamed` (one pass over an iterator, shard by shard to disk) loads, memory-mapped,
    into the index `build` makes in memory: the same files array for array, and the same
    answers, both equal to the brute-force reference."""
    bos = 1 if with_bos else None
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * len(docs))[:len(docs)]
    shard = max(shard, max(len(d) for d in docs) + 2)
    mem = CorpusIndex.build(docs, eos=2, bos=bos, vocab_size=40, ids=ids, shard_tokens=shard,
                            progress=False)
    d = tmp_path_factory.mktemp("streamed")
    CorpusIndex.build_streamed(d, iter(docs), eos=2, bos=bos, vocab_size=40,
                               shard_tokens=shard, ids=iter(ids.tolist()), progress=False)
    disk = CorpusIndex.load(d, mmap=True)
    assert isinstance(disk.shards[0].sa, np.memmap) and len(disk.shards) == len(mem.shards)
    assert disk.header == mem.header and disk.content_key == mem.content_key
    brute = Brute(docs, 2, bos)
    pats = _patterns(brute, rng, 30)
    for p in pats:
        assert disk.count(p) == brute.count(p), p
        assert disk.continuations(p).tolist() == brute.continuations(p), p
        if p:
            assert disk.docs(p).tolist() == sorted(ids[brute.docs(p)].tolist()), p
        assert disk.docs(p).tolist() == mem.docs(p).tolist()
        st_ = disk.state(p)
        assert st_ == mem.state(p) and disk.is_unique(st_) == mem.is_unique(mem.state(p))


def test_streamed_build_rejects_what_build_rejects(tmp_path):
    with pytest.raises(IndexError_, match="empty corpus"):
        CorpusIndex.build_streamed(tmp_path / "a", iter([]), eos=2, bos=None, vocab_size=9,
                                   shard_tokens=10)
    with pytest.raises(IndexError_, match="has no tokens"):
        CorpusIndex.build_streamed(tmp_path / "b", iter([[3], []]), eos=2, bos=None,
                                   vocab_size=9, shard_tokens=10)
    with pytest.raises(IndexError_, match="exceeds shard_tokens"):
        CorpusIndex.build_streamed(tmp_path / "c", iter([[3] * 20]), eos=2, bos=None,
                                   vocab_size=9, shard_tokens=10)
    with pytest.raises(IndexError_, match=r"\[0, 9\)"):
        CorpusIndex.build_streamed(tmp_path / "d", iter([[3, 12]]), eos=2, bos=None,
                                   vocab_size=9, shard_tokens=10)
    assert not (tmp_path / "d" / "index.json").exists()


def test_shards_allowed_sets_merge_exactly_when_large():
    """Several shards whose allowed sets are large (merged through a vocabulary mask) and small
    (merged by sorting), the root's set cached: each equal to the brute-force continuations."""
    rng = np.random.default_rng(3)
    docs = [rng.integers(3, 400, size=int(rng.integers(20, 60))).tolist() for _ in range(120)]
    docs += [[5] + rng.integers(3, 400, size=30).tolist() for _ in range(60)]  # wide after 5
    idx = CorpusIndex.build(docs, eos=2, bos=1, vocab_size=400, shard_tokens=1500,
                            progress=False)
    assert len(idx.shards) >= 3
    brute = Brute(docs, 2, 1)
    for p in ([], [], [5], [1], [7], [5, int(docs[-1][1])], [1, int(docs[0][0])]):
        got = idx.continuations(p)
        assert got.dtype == np.int64
        assert got.tolist() == brute.continuations(p), p
    assert idx.continuations([5]).size > 64  # the mask path ran
