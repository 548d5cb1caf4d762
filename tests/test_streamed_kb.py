"""The `paper` profile's WK21M path (issue 27): DPR's ``psgs_w100.tsv`` stays in its file
(`passage_file.PassageFile`: ids and record offsets only) and everything reads it as it needs it;
on a small file of the same format, every route answers exactly like the table route
(`read_corpus_csv` -> `deduplicate` -> table): the passages kept, their texts, the corpus index
(streamed, several shards), the MiniLM vectors and BM25."""

import csv
import json
import tracemalloc

import numpy as np
import pytest

from gemkr.baselines import BM25
from gemkr.config import get_config
from gemkr.data.kb import KBError, deduplicate
from gemkr.data.loaders import DatasetError, read_corpus_csv
from gemkr.kb_index import kb_index, streamed_index
from gemkr.passage_file import PassageFile, passage_texts
from gemkr.tokenizer import load_tokenizer

WORDS = ("the red bus is a vehicle used for transport kettle boils water in a kitchen giraffe "
         "eats leaves from tall trees a violin has four strings and a bow").split()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(get_config("smoke").tokenizer)


def _tsv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "text", "title"])
        w.writerows(rows)


def _corpus(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(i + 1, " ".join(rng.choice(WORDS, size=int(rng.integers(5, 30)))), f"T{i}")
            for i in range(n)]
    rows[7] = (8, rows[2][1], "a duplicate of passage 3")  # dropped: passage 3 came first
    rows[11] = (12, 'a "quoted"\ttab and\nnewline passage', "quoting as csv writes it")
    rows[20] = (1000, rows[40][1], "the same text as passage 41, earlier in the file")
    return rows  # 1000 is dropped for 41, as `deduplicate` keeps the smallest pid of a text


@pytest.fixture()
def wk(tmp_path):
    path = tmp_path / "psgs_w100.tsv"
    _tsv(path, _corpus(300))
    table, dups = deduplicate(read_corpus_csv(path, "id", "\t", source="wk21m"), "WK21M")
    kb = PassageFile.scan(path, name="WK21M", root=tmp_path / "scan")
    return path, table, dups, kb


def test_passage_file_holds_the_passages_of_the_table_route(wk, tmp_path, monkeypatch):
    path, table, dups, kb = wk
    assert sorted(dups["pid"].tolist()) == [8, 1000]
    assert len(kb) == len(table) and kb["pid"].tolist() == table["pid"].tolist()
    assert kb.duplicates.sort_values("pid")[["pid", "kept_pid"]].values.tolist() == \
        dups.sort_values("pid")[["pid", "kept_pid"]].values.tolist() == [[8, 3], [1000, 41]]
    assert kb.texts_at(range(len(kb))) == table["text"].tolist()
    chunks = list(kb.rows(chunk=37))
    assert [len(t) for _, t in chunks][:-1] == [37] * (len(chunks) - 1)
    assert [t for _, ts in chunks for t in ts] == table["text"].tolist()
    assert np.concatenate([p for p, _ in chunks]).tolist() == table["pid"].tolist()
    texts = passage_texts(kb)
    assert texts[12] == 'a "quoted" tab and newline passage' and 12 in texts
    assert 1000 not in texts and len(texts) == len(table)
    for pid, text in zip(table["pid"], table["text"], strict=True):
        assert texts[pid] == text
    with pytest.raises(KeyError):
        texts[8]
    with pytest.raises(TypeError, match="stays on disk"):
        kb["text"]
    # a second scan finds the cache: the file is hashed, not parsed
    monkeypatch.setattr("gemkr.data.loaders.corpus_records",
                        lambda *a, **k: pytest.fail("parsed again"))
    again = PassageFile.scan(path, name="WK21M", root=tmp_path / "scan")
    assert again["pid"].tolist() == kb["pid"].tolist() and again.key == kb.key


def test_scan_and_reads_never_hold_the_file(tmp_path):
    """20 MB of passages: the scan and a pass over every text stay within a few MB."""
    rng = np.random.default_rng(2)
    path = tmp_path / "big.tsv"
    _tsv(path, [(i, " ".join(rng.choice(WORDS, size=220)), "t") for i in range(20_000)])
    size = path.stat().st_size
    assert size > 18e6
    tracemalloc.start()
    kb = PassageFile.scan(path, name="big", root=tmp_path / "scan")
    scan_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    n = sum(len(t) for _, t in kb.rows(chunk=256))
    rows_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 20_000
    assert scan_peak < size / 5 and rows_peak < size / 5, (scan_peak, rows_peak, size)


def test_streamed_tsv_index_equals_the_table_route(wk, tmp_path, tok):
    _, table, _, kb = wk
    ref = kb_index("smoke", "WK21M", table, tok, "t", root=tmp_path / "table")
    got = streamed_index("smoke", "WK21M", kb, tok, "t", root=tmp_path / "streamed",
                         chunk=37, shard_tokens=1500)
    assert len(got.shards) > 1 and got.num_docs == ref.num_docs == len(table)
    assert got.num_tokens == ref.num_tokens
    np.testing.assert_array_equal(np.asarray(got.ids), np.asarray(ref.ids))
    meta = json.loads((tmp_path / "streamed" / "WK21M" / "streamed.json").read_text())
    assert meta == {"passages": len(table), "tokens": ref.num_tokens, "duplicates_dropped": 2}
    rng = np.random.default_rng(1)
    for _ in range(200):  # every answer of the index, on stretches of real passages
        j = int(rng.integers(len(table)))
        text = table["text"].iloc[j].split()
        a = int(rng.integers(len(text)))
        words = " ".join(text[a:a + int(rng.integers(1, 4))])
        pat = tok(" " + words, add_special_tokens=False)["input_ids"]
        for k in range(len(pat) + 1):
            assert got.count(pat[:k]) == ref.count(pat[:k])
            assert got.continuations(pat[:k]).tolist() == ref.continuations(pat[:k]).tolist()
        assert got.docs(pat).tolist() == ref.docs(pat).tolist()
    # `kb_index` streams a PassageFile (default shard size: one shard here)
    whole = kb_index("smoke", "WK21M", kb, tok, "t", root=tmp_path / "via_kb_index")
    assert len(whole.shards) == 1 and whole.num_tokens == ref.num_tokens
    np.testing.assert_array_equal(np.asarray(whole.ids), np.asarray(ref.ids))


def test_streamed_baselines_equal_the_table_route(wk, tmp_path):
    from gemkr.embeddings import minilm_encoder, passage_embeddings

    _, table, _, kb = wk
    queries = ["a giraffe eats leaves", "the kettle in a kitchen", "violin bow strings"]
    ref, got = BM25(table).search_scored(queries, k=10)[0], BM25(kb).search_scored(queries, 10)[0]
    assert [[p for p, _ in h] for h in got] == [[p for p, _ in h] for h in ref]
    np.testing.assert_allclose([[s for _, s in h] for h in got], [[s for _, s in h] for h in ref],
                               rtol=1e-6)
    enc = minilm_encoder()
    vec_ref, _ = passage_embeddings({"WK21M": table}, enc, tmp_path / "table_vec", fast=False)
    vec, info = passage_embeddings({"WK21M": kb}, enc, tmp_path / "file_vec", fast=False)
    assert isinstance(vec["WK21M"], np.memmap) and info["embedded"].tolist() == [len(kb)]
    np.testing.assert_allclose(vec["WK21M"], vec_ref["WK21M"], atol=1e-5)
    again, info = passage_embeddings({"WK21M": kb}, enc, tmp_path / "file_vec", fast=False)
    assert info["cached"].tolist() == [True]
    np.testing.assert_array_equal(again["WK21M"], vec["WK21M"])


def test_streamed_tsv_errors_name_the_row(tmp_path):
    empty = tmp_path / "empty.tsv"
    _tsv(empty, [(1, "a passage", "t"), (2, "   ", "t")])
    with pytest.raises(KBError, match="passage 2 .record 2 after the header. is empty"):
        PassageFile.scan(empty, name="WK21M", root=tmp_path / "a")
    bad_id = tmp_path / "bad_id.tsv"
    _tsv(bad_id, [(1, "a passage", "t"), ("x7", "another one", "t")])
    with pytest.raises(DatasetError,
                       match="record 2 after the header: passage id 'x7' is not a whole number"):
        PassageFile.scan(bad_id, name="WK21M", root=tmp_path / "b")
    with pytest.raises(DatasetError, match="not found"):
        PassageFile.scan(tmp_path / "missing.tsv", name="WK21M", root=tmp_path / "c")
    header_only = tmp_path / "header.tsv"
    _tsv(header_only, [])
    with pytest.raises(DatasetError, match="no passages"):
        PassageFile.scan(header_only, name="WK21M", root=tmp_path / "d")
    same_id = tmp_path / "same_id.tsv"
    _tsv(same_id, [(1, "a passage", "t"), (1, "another one", "t")])
    with pytest.raises(ValueError, match="ids repeat"):
        PassageFile.scan(same_id, name="WK21M", root=tmp_path / "e")
    no_text = tmp_path / "no_text.tsv"
    no_text.write_text("id\tbody\n1\tx\n")
    with pytest.raises(DatasetError, match="needs columns 'id' and 'text'"):
        PassageFile.scan(no_text, name="WK21M", root=tmp_path / "f")


def test_retrieve_shows_a_file_kbs_passages_by_id(wk):
    """`retrieve`'s rows for a KB left in its file: the passage id and text read from the file,
    as a table with an id column gives them."""
    from gemkr.retriever import _id_and_text

    _, table, _, kb = wk
    pids = [12, 41, 3]
    got = _id_and_text(kb, pids)
    ref = _id_and_text(table.assign(id=table["pid"].astype(str)), pids)
    assert got == ref and got[12] == ("12", 'a "quoted" tab and newline passage')
