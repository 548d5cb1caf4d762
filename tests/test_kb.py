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
    (b'{"id": 1, "text": "x"}\n{"id": 1, "text": "y"}\n', ".jsonl",
     "line 2: duplicate passage id '1' \\(first on line 1\\)"),
    (b'{"id": 1, "text": "  "}\n', ".jsonl", "line 1: the passage has no text"),
    (b'{"id": 1, "text": 5}\n', ".jsonl", "line 1: the text 5 is not a string"),
    (b'{"id": null, "text": "x"}\n', ".jsonl", "line 1: the id null is not a string"),
    (b'{"id": "ok", "text": "x"}\n{"id": [1], "text": "x"}\n', ".jsonl",
     "line 2: the id \\[1\\] is not a string"),
    (b'{"id": {"a": 1}, "text": "x"}\n', ".jsonl", "line 1: the id {"),
    (b'{"id": true, "text": "x"}\n', ".jsonl", "the id true is not"),
    (b'{"id": 1.5, "text": "x"}\n', ".jsonl", "the id 1.5 is not"),
    (b'{"id": "a\\nb", "text": "x"}\n', ".jsonl", "line 1: the id 'a\\\\nb' holds a line break"),
    (b'{"id": "x", "text": "y"}\n\xff\n', ".jsonl", "line 2: not UTF-8"),
    (b'id,text\n1,"open\n2,ok\n3,more\n', ".csv", "line 2 \\(read to line 4\\): unexpected end"),
    (b'id\ttext\n1\t"quoted" rest\n2\tok\n', ".tsv", "line 2: .* expected after"),
    (b"id,text\n1,x,y\n", ".csv", "line 2: 3 fields under a header of 2"),
    (b"id,text\n1,x\n2,y\n1,z\n", ".csv", "line 4: duplicate passage id '1' \\(first on line 2"),
    (b"id,text\n ,x\n", ".csv", "line 2: empty id"),
    (b"id,text\n1,x\n\xfe\n", ".csv", "not UTF-8"),
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


def test_a_folder_or_an_unreadable_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "kb.jsonl").mkdir()
    with pytest.raises(kb.KBFileError, match="is a folder"):
        kb.load_passages(tmp_path / "kb.jsonl")
    path = _jsonl(tmp_path / "locked.jsonl")

    def denied(*args, **kwargs):  # as chmod 000 would, also when the tests run as root
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(kb, "open", denied, raising=False)
    with pytest.raises(kb.KBFileError, match="cannot be read \\(Permission denied\\)"):
        kb.load_passages(path)


def test_what_used_to_break_now_reads_exactly(tmp_path):
    """Long passages, U+2028 / U+0085 / a lone CR inside JSON strings, quoted TSV fields (as
    Python's csv and DPR's psgs_w100.tsv write them), integer ids, blank lines."""
    import csv

    long = "word " * 40_000  # 200,000 characters: past csv's default field limit
    rows = [("p1", long), ("p2", "one\u2028two\u0085three\rfour"), ("3", '"quoted" at the start'),
            ("p4", "tab\tinside, comma, and \"quotes\"")]
    jsonl = tmp_path / "k.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in rows) + "\n\n",
                     encoding="utf-8")
    tables = {"jsonl": kb.load_passages(jsonl)}
    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        path = tmp_path / f"k{suffix}"
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter=delim).writerows([("text", "id"), *[(t, i) for i, t in rows]])
        tables[suffix] = kb.load_passages(path)
    for name, t in tables.items():
        assert t["id"].tolist() == [i for i, _ in rows], name
        assert t["text"].tolist() == [x for _, x in rows], name
    ints = tmp_path / "i.jsonl"
    ints.write_text('{"id": 7, "text": "x"}\n{"id": "07", "text": "y"}\n')
    assert kb.load_passages(ints)["id"].tolist() == ["7", "07"]


def test_one_pass_hash_equals_the_file_hash(tmp_path):
    path = _jsonl(tmp_path / "h.jsonl")
    path.write_bytes(path.read_bytes() + b"\n\n  \n")  # trailing blank lines still count
    passages, digest = kb.read_passages(path)
    assert digest == kb.file_hash(path) and len(passages) == len(ROWS)


def _random_kb(rng, kind: str) -> tuple[bytes, list[tuple[str, str]] | None]:
    """Random KB file bytes and, when it was written as a valid file, the rows it holds."""
    import csv
    import io

    alphabet = ['a', 'Z', '0', ' ', ',', '\t', '"', "'", '\n', '\r', '\\', '{', '}', ':', 'é',
                '\u2028', '\u0085', '\x00', '\ufeff', '😀']
    def word(lo=0):
        return "".join(rng.choice(alphabet) for _ in range(int(rng.integers(lo, 12))))
    rows = [(f"id{k}" if rng.random() < 0.7 else word(1), word(1))
            for k in range(int(rng.integers(0, 6)))]
    if kind == "jsonl":
        data = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=bool(rng.random() < 0.5))
                       + "\n" for i, t in rows).encode()
    else:
        buf = io.StringIO()
        csv.writer(buf, delimiter="," if kind == "csv" else "\t").writerows([("id", "text"),
                                                                               *rows])
        data = buf.getvalue().encode()
    valid = rows
    if rng.random() < 0.5:  # break it: flip, drop or insert bytes
        data = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(data) + 1))
            op = rng.integers(3)
            if op == 0 and at < len(data):
                data[at] = int(rng.integers(256))
            elif op == 1 and at < len(data):
                del data[at]
            else:
                data[at:at] = bytes([int(rng.integers(256))])
        data, valid = bytes(data), None
    return data, valid


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv"])
def test_fuzz_every_file_loads_exactly_or_is_a_kb_error(tmp_path, kind):
    """Seeded random files, valid and broken: each either loads passages whose ids and texts
    are exactly the ones written, or raises KBFileError; never another exception."""
    rng = np.random.default_rng(2026)
    path = tmp_path / f"f.{kind}"
    loaded = errors = 0
    for _ in range(400):
        data, rows = _random_kb(rng, kind)
        path.write_bytes(data)
        try:
            t = kb.load_passages(path)
        except kb.KBFileError:
            errors += 1
            continue
        loaded += 1
        pairs = list(zip(t["id"], t["text"], strict=True))
        if rows is not None:
            assert pairs == rows
        assert all(i.strip() and "\n" not in i and x.strip() for i, x in pairs)
    assert loaded > 50 and errors > 50  # both outcomes are exercised


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


def test_kb_file_benchmark_indexes_a_generated_file_in_a_fresh_process(tmp_path):
    from gemkr import bench

    size = bench.write_kb_file(tmp_path / "kb.jsonl", 300)
    passages = kb.load_passages(tmp_path / "kb.jsonl")
    assert len(passages) == 300 and passages["id"].is_unique and size > 300 * 40
    row = bench.bench_kb_file(500, tmp_path / "run").iloc[0]
    assert row["passages"] == 500 and row["tokens"] > 500 * 5
    assert 0 < row["peak_rss_GB"] < row["target_max_GB"] and row["meets_target"] == "yes"
