"""Knowledge bases of one's own (`gemkr.kb`): reading JSONL / CSV / TSV, the errors a user meets,
and the index cache (built once, reused, rebuilt when the file changes, nothing half-written
after a crash)."""

import json

import numpy as np
import pytest

from gemkr import kb, paths
from gemkr.config import get_config
from gemkr.index import CorpusIndex
from gemkr.tokenizer import encode_passages, load_tokenizer

ROWS = [("a1", "banana: elongated crescent-shaped yellow fruit"),
        ("a2", "guitar: a stringed instrument, usually six strings"),
        ("b7", 'kettle: a metal pot for boiling water; "whistles" when ready')]


def _jsonl(path, rows=ROWS):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))
    return path


@pytest.fixture()
def tok():
    return load_tokenizer(get_config("smoke").tokenizer)


@pytest.fixture()
def kb_root(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")
    return tmp_path / "repo" / "artifacts"


def test_the_three_formats_read_the_same(tmp_path):
    import csv

    tables = [kb.load_passages(_jsonl(tmp_path / "p.jsonl"))]
    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        path = tmp_path / f"p{suffix}"
        with open(path, "w", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["id", "text", "source"])
            w.writerows([(i, t, "mine") for i, t in ROWS])
        tables.append(kb.load_passages(path))
    for t in tables:
        assert t["id"].tolist() == [i for i, _ in ROWS]
        assert t["text"].tolist() == [x for _, x in ROWS]
        assert t["pid"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("content, suffix, message", [
    (b"", ".jsonl", "holds no passages"),
    ("\xe9t\xe9".encode("latin-1"), ".jsonl", "not UTF-8"),
    (b'{"id": 1, "text": "x"}\n{"id": 1, "text": "y"}\n', ".jsonl", "duplicate passage id '1'"),
    (b'{"id": 1, "text": "  "}\n', ".jsonl", "has no text"),
    (b'{"id": 1, "body": "x"}\n', ".jsonl", "expected"),
    (b"{oops\n", ".jsonl", "line 1: not a JSON object"),
    (b"key,body\n1,x\n", ".csv", "columns 'id' and 'text'"),
    (b"id\ttext\n", ".tsv", "holds no passages"),
    (b"id,text\n1,x\n", ".txt", "unknown knowledge base format"),
])
def test_bad_files_are_named_errors(tmp_path, content, suffix, message):
    path = tmp_path / f"kb{suffix}"
    path.write_bytes(content)
    with pytest.raises(kb.KBFileError, match=message):
        kb.load_passages(path)


def test_missing_file(tmp_path):
    with pytest.raises(kb.KBFileError, match="not found"):
        kb.load_passages(tmp_path / "nope.jsonl")


def test_index_is_built_once_then_reused_and_rebuilt_on_edit(tmp_path, tok, kb_root):
    path = _jsonl(tmp_path / "mine.jsonl")
    first = kb.user_index(path, tok, "t", "prof")
    again = kb.user_index(path, tok, "t", "prof")
    assert first.built and not again.built and first.folder == again.folder
    assert first.folder.parent == kb_root / "prof" / "kb"
    # the index finds each passage's opening in that passage only
    for number, (_, text) in enumerate(ROWS):
        ids = encode_passages(tok, [text])[0][:3].tolist()  # as the index encodes passages
        assert again.index.state_docs(again.index.state(ids)).tolist() == [number]
    edited = _jsonl(path, ROWS + [("c1", "teapot: pot for brewing tea")])
    third = kb.user_index(edited, tok, "t", "prof")
    assert third.built and third.folder != first.folder and third.index.num_docs == 4


def test_a_crash_while_indexing_leaves_no_cache(tmp_path, tok, kb_root, monkeypatch):
    path = _jsonl(tmp_path / "mine.jsonl")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(CorpusIndex, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        kb.user_index(path, tok, "t", "prof")
    folder = kb.cache_folder("prof", kb.file_hash(path))
    assert not (folder / "index").exists()
    assert not [p for p in folder.rglob("*") if ".tmp-" in p.name], "no temp left behind"
    monkeypatch.undo()
    monkeypatch.setattr(paths, "REPO_ROOT", kb_root.parent)
    assert kb.user_index(path, tok, "t", "prof").built  # the next call builds it cleanly


def test_vectors_are_cached_next_to_the_index(tmp_path, tok, kb_root):
    from gemkr.embeddings import minilm_encoder

    user = kb.user_index(_jsonl(tmp_path / "mine.jsonl"), tok, "t", "prof")
    enc = minilm_encoder()
    vectors = kb.user_vectors(user, enc)
    assert vectors.shape == (3, enc.get_embedding_dimension())
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert (user.folder / "minilm.npy").exists()
    assert np.array_equal(kb.user_vectors(user, None), vectors)  # loaded, no encoder needed
