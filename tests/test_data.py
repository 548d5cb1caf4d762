"""Benchmark: WordNet reader, curated table, renderer, questions, KBs, splits, loaders."""

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import gemkr
from gemkr.data import benchmark, kb, loaders, okmoji, questions, render, wordnet
from gemkr.data.objects import CATEGORY_NOUN, ObjectTableError, load_objects, validate_objects


@pytest.fixture(scope="module")
def nouns():
    return wordnet.load_nouns()


@pytest.fixture(scope="module")
def smoke_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    content = benchmark._build_okmoji(gemkr.get_config("smoke"), root)
    (root / "content.json").write_text(json.dumps(content))
    return benchmark.load_benchmark(root)


# ------------------------------------------------------------------------------------ WordNet
def test_wordnet_counts_and_a_known_synset(nouns):
    assert len(nouns) == 82_115
    banana = nouns[7753592]
    assert banana.lexname == "noun.food" and banana.names == ("banana",)
    assert "crescent-shaped yellow fruit" in banana.gloss and banana.hypernyms == (7705931,)
    assert 7753592 in nouns[7705931].hyponyms, "hyponym pointers are parsed too"
    assert wordnet.passage_text(nouns[12352287]).startswith("banana, banana tree: any of")


def test_wordnet_reader_names_bad_lines(tmp_path):
    with pytest.raises(wordnet.WordNetError, match="cannot parse"):
        wordnet.parse_data_line("00001740 03 n zz", {3: "noun.Tops"}, where="(x:1)")
    with pytest.raises(wordnet.WordNetError, match="empty gloss for synset 00001740"):
        wordnet.parse_data_line("00001740 03 n 01 entity 0 000 | ", {3: "noun.Tops"})
    (tmp_path / "lexnames").write_text("03 noun.Tops 1\n")
    (tmp_path / "data.noun").write_bytes(b"00001740 03 n 01 entit\xff 0 000 | x\n")
    with pytest.raises(wordnet.WordNetError, match="line 1 is not UTF-8"):
        wordnet.load_nouns(tmp_path)


# ------------------------------------------------------------------------------ object table
def test_curated_table_is_large_balanced_and_valid(nouns):
    objects = load_objects()
    assert len(objects) >= 300 and objects["category"].nunique() >= 8
    assert set(objects["category"]) <= set(CATEGORY_NOUN)
    validate_objects(objects, nouns)  # every synset exists, every name is one of its lemmas
    picks = dict(zip(objects["emoji_name"], objects["synset"], strict=True))
    # hand-picked senses: the tree, domestic swine, the rodent / the device
    assert nouns[picks["palm_tree"]].lexname == "noun.plant"
    assert "domestic swine" in nouns[picks["pig"]].gloss
    assert nouns[picks["mouse"]].lexname == "noun.animal"
    assert "cursor" in nouns[picks["computer_mouse"]].gloss


def test_every_glyph_renders_non_empty():
    for char in load_objects()["char"]:
        sprite = render.render_glyph(char, 24)
        assert np.asarray(sprite)[..., 3].max() > 0


def test_bad_rows_are_named(nouns):
    objects = load_objects().head(3).copy()
    bad = objects.copy()
    bad.loc[1, "name"] = "spaceship"
    with pytest.raises(ObjectTableError, match=r"row 2 \(badger\): name 'spaceship'"):
        validate_objects(bad, nouns)
    bad = objects.copy()
    bad.loc[0, "synset"] = 1
    with pytest.raises(ObjectTableError, match="synset 00000001 is not"):
        validate_objects(bad, nouns)
    with pytest.raises(render.RenderError, match=r"U\+E000B renders empty"):
        render.render_glyph(chr(0xE000B), 24)


# ----------------------------------------------------------------------------------- scenes
def test_scene_rendering_is_deterministic_with_exact_boxes():
    objects = load_objects()
    chars = objects["char"].iloc[[0, 50, 100, 150]].tolist()
    a, pa = render.render_scene(7, chars, [0, 50, 100, 150], 128)
    b, pb = render.render_scene(7, chars, [0, 50, 100, 150], 128)
    assert a.tobytes() == b.tobytes() and pa == pb
    c, _ = render.render_scene(8, chars, [0, 50, 100, 150], 128)
    assert a.tobytes() != c.tobytes()
    for p in pa:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
    for i in range(len(pa)):
        for j in range(i):
            assert render._iou(pa[i].box, pa[j].box) <= render.MAX_IOU


# -------------------------------------------------------------------------------- questions
def test_leak_detection_is_whole_word():
    assert questions.leaks("What is the banana used for?", ["banana"])
    assert questions.leaks("What is the Hot Dog for?", ["hot dog"])
    assert not questions.leaks("What is the bandana used for?", ["banana"])
    assert not questions.leaks("What family does this plant belong to?", ["pot plant"])


def test_answers_are_substrings_of_the_passage():
    text = "ant, emmet, pismire: social insect living in organized colonies"
    ans = questions.answers_from_passage(text, ["ant", "emmet", "pismire"])
    assert ans[:3] == ["ant", "emmet", "pismire"] and "social" in ans
    assert all(a in text.lower() for a in ans)


def test_references_are_unambiguous():
    P = render.Placement
    placed = [P(0, (0, 0, 20, 20), 0, False, 0), P(1, (60, 70, 100, 110), 0, False, 0)]
    refs = dict(questions.references(0, placed, ["animal", "food"], ["ant", "pie"], 128))
    assert refs["left"] == "the animal on the left" and "right" not in refs
    assert refs["top"] == "the object at the top" and refs["smallest"] == "the smallest object"
    assert "biggest" in dict(questions.references(1, placed, ["animal", "food"], ["a", "b"], 128))


# -------------------------------------------------------------------------------- benchmark
def test_smoke_benchmark_shape_and_honesty(smoke_bench, nouns):
    b, cfg = smoke_bench, gemkr.get_config("smoke")
    q = b.questions
    need = {"qid", "split", "scene_id", "image_path", "question", "target_synset", "gold_pid",
            "answers", "caption"}
    assert need <= set(q.columns) and q["qid"].is_unique
    assert set(q["split"]) == set(okmoji.SPLITS)
    for row in q.itertuples():  # leakage: no lemma of the target in its question
        assert not questions.leaks(row.question, list(nouns[row.target_synset].names)), row
        assert row.answers, row.qid
    for name, df in b.kb.items():  # every gold passage in every KB; answers inside it
        texts = dict(zip(df["pid"], df["text"], strict=True))
        for row in q.itertuples():
            assert row.gold_pid in texts, (name, row.qid)
            assert all(a in texts[row.gold_pid].lower() for a in row.answers)
    scenes = q.groupby("scene_id")["split"].nunique()
    assert (scenes == 1).all(), "splits are disjoint by scene"
    train_targets = set(q.loc[q["split"] == "train", "target_obj"])
    assert not set(q.loc[q["split"] == "test_unseen", "target_obj"]) & train_targets
    assert len(b.kb["KB-S"]) == cfg.kb_s_size
    assert b.image(0).size == (cfg.image_size, cfg.image_size)


def test_benchmark_is_deterministic(smoke_bench, tmp_path):
    content = benchmark._build_okmoji(gemkr.get_config("smoke"), tmp_path)
    assert content["content_hash"] == smoke_bench.meta["content_hash"]
    other = benchmark._build_okmoji(gemkr.get_config("smoke", seed=1), tmp_path / "s1")
    assert other["content_hash"] != content["content_hash"]


def test_kb_dedup_and_errors():
    df = pd.DataFrame({"pid": [0, 1, 2], "text": ["a: x", "b: y", "a: x"]})
    kept, dups = kb.deduplicate(df, "T")
    assert kept["pid"].tolist() == [0, 1] and dups[["pid", "kept_pid"]].values.tolist() == [[2, 0]]
    with pytest.raises(kb.KBError, match="passage pid 1 is empty"):
        kb.deduplicate(pd.DataFrame({"pid": [0, 1], "text": ["a", " "]}), "T")
    assert kb._clean_definition("A fruit.  [1913 Webster]") == "A fruit."


# ---------------------------------------------------------------------------------- loaders
def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def _okvqa_files(root):
    for split in ("train2014", "val2014"):
        (root / split).mkdir()
        (root / split / f"COCO_{split}_000000000009.jpg").write_bytes(_jpeg())
        (root / f"OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(
            {"questions": [{"image_id": 9, "question": "What sport?", "question_id": 90}]}))
        (root / f"mscoco_{split}_annotations.json").write_text(json.dumps(
            {"annotations": [{"question_id": 90, "image_id": 9,
                              "answers": [{"answer": "tennis"}, {"answer": "tennis"}]}]}))


def test_okvqa_gs112k_and_wk21m_loaders(tmp_path, monkeypatch):
    from gemkr import paths
    from gemkr.passage_file import PassageFile, passage_texts

    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")  # WK21M's scan is cached there
    _okvqa_files(tmp_path)
    (tmp_path / "okvqa_train_corpus.csv").write_text(
        "kid,text\n0,Tennis is a racket sport.\n1,\"Golf is\nplayed outdoors.\"\n2,"
        "Tennis is a racket sport.\n")
    (tmp_path / "psgs_w100.tsv").write_text("id\ttext\ttitle\n1\tAardvark text\tAardvark\n")
    cfg = gemkr.get_config("paper", data_root=str(tmp_path))
    b = loaders.load_paper_dataset(cfg)
    assert b.kb["GS112K"]["text"].tolist() == ["Tennis is a racket sport.",
                                               "Golf is played outdoors."]
    assert b.questions["answers"].tolist() == [["tennis"], ["tennis"]]
    assert b.image(9).size == (8, 8)
    wk = loaders.load_paper_dataset(gemkr.get_config("paper", data_root=str(tmp_path),
                                                     dataset="okvqa_wk21m"))
    assert wk.kb["WK21M"]["pid"].tolist() == [1]
    assert isinstance(wk.kb["WK21M"], PassageFile), "WK21M stays in its file"
    assert passage_texts(wk.kb["WK21M"])[1] == "Aardvark text" and wk.kb_dups.empty
    assert (tmp_path / "repo" / "artifacts" / "paper" / "01_data_prep" / "WK21M_passages").is_dir()


def test_remuq_loader(tmp_path):
    (tmp_path / "remuq").mkdir()
    (tmp_path / "remuq" / "test.json").write_text(json.dumps(
        [{"question": "Who built it?", "img_id": "a1", "passage_id": 5, "answer": "x"}]))
    (tmp_path / "remuq" / "corpus.jsonl").write_text('{"id": 5, "text": "It was built."}\n')
    (tmp_path / "remuq" / "images.tsv").write_text("a1\t" + base64.b64encode(_jpeg()).decode())
    b = loaders.load_paper_dataset(gemkr.get_config("paper", data_root=str(tmp_path),
                                                    dataset="remuq"))
    assert b.questions["gold_pid"].tolist() == [5] and b.image(0).size == (8, 8)


def test_loader_errors_name_the_item(tmp_path):
    cfg = gemkr.get_config("paper", data_root=str(tmp_path))
    with pytest.raises(loaders.DatasetError, match="OpenEnded_mscoco_train2014_questions.json "
                                                   "not found: obtain it from https://okvqa"):
        loaders.load_paper_dataset(cfg)
    (tmp_path / "c.csv").write_bytes(b"kid,text\n0,fine\n1,caf\xe9\n")
    with pytest.raises(loaders.DatasetError, match=r"c.csv:3: line is not UTF-8"):
        loaders.read_corpus_csv(tmp_path / "c.csv", "kid", ",")
    (tmp_path / "e.csv").write_text("kid,text\n0,fine\n7,\n")
    with pytest.raises(kb.KBError, match="passage 7"):
        loaders.read_corpus_csv(tmp_path / "e.csv", "kid", ",")
    _okvqa_files(tmp_path)
    (tmp_path / "mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(loaders.DatasetError, match="question 90 has no answers"):
        loaders.read_okvqa(tmp_path, "val2014")
