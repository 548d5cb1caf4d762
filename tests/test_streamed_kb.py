"""The `paper` profile's WK21M path (issue 27): DPR's ``psgs_w100.tsv`` streamed into the index
(`kb_index.streamed_index`) answers exactly like the table route (`read_corpus_csv` ->
`deduplicate` -> `kb_index`), on a small file of the same format, in several shards."""

import csv
import json

import numpy as np
import pytest

from gemkr.config import get_config
from gemkr.data.kb import KBError, deduplicate
from gemkr.data.loaders import DatasetError, read_corpus_csv
from gemkr.kb_index import kb_index, streamed_index
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
    return rows


def test_streamed_tsv_index_equals_the_table_route(tmp_path, tok):
    path = tmp_path / "psgs_w100.tsv"
    _tsv(path, _corpus(300))
    table, dups = deduplicate(read_corpus_csv(path, "id", "\t", source="wk21m"), "WK21M")
    assert dups["pid"].tolist() == [8]
    ref = kb_index("smoke", "WK21M", table, tok, "t", root=tmp_path / "table")
    got = streamed_index("smoke", "WK21M", path, tok, "t", root=tmp_path / "streamed",
                         chunk=37, shard_tokens=1500)
    assert len(got.shards) > 1 and got.num_docs == ref.num_docs == len(table)
    assert got.num_tokens == ref.num_tokens
    np.testing.assert_array_equal(np.asarray(got.ids), np.asarray(ref.ids))
    meta = json.loads((tmp_path / "streamed" / "WK21M" / "streamed.json").read_text())
    assert meta == {"passages": len(table), "tokens": ref.num_tokens, "duplicates_dropped": 1}
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
    # a second call finds the cache: nothing is read but the file's hash
    again = streamed_index("smoke", "WK21M", path, tok, "t", root=tmp_path / "streamed",
                           chunk=37, shard_tokens=1500)
    assert again.num_docs == got.num_docs


def test_streamed_tsv_errors_name_the_row(tmp_path, tok):
    empty = tmp_path / "empty.tsv"
    _tsv(empty, [(1, "a passage", "t"), (2, "   ", "t")])
    with pytest.raises(KBError, match="passage 2 .row 3. is empty"):
        streamed_index("smoke", "WK21M", empty, tok, "t", root=tmp_path / "a")
    bad_id = tmp_path / "bad_id.tsv"
    _tsv(bad_id, [(1, "a passage", "t"), ("x7", "another one", "t")])
    with pytest.raises(DatasetError, match="row 3: passage id 'x7' is not a whole number"):
        streamed_index("smoke", "WK21M", bad_id, tok, "t", root=tmp_path / "b")
    with pytest.raises(DatasetError, match="not found"):
        streamed_index("smoke", "WK21M", tmp_path / "missing.tsv", tok, "t",
                       root=tmp_path / "c")
