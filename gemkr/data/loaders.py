"""Loaders of the paper's datasets in their published formats (paper-notes §12), returning the same
`Benchmark` shape as OKMoji. Nothing is downloaded: files are read from ``cfg.data_root`` and a
missing one stops with an error naming it and where it is published.

Layout expected under ``data_root`` (names as published):

- OK-VQA (Marino et al. 2019): ``OpenEnded_mscoco_{train,val}2014_questions.json``,
  ``mscoco_{train,val}2014_annotations.json``; COCO images ``{train,val}2014/COCO_*.jpg``.
  GeMKR's test split is val2014 (5,046 questions).
- GS112K (VRR, Luo et al. 2021): ``okvqa_train_corpus.csv`` with columns ``kid,text[,title]``.
- WK21M (DPR, Karpukhin et al. 2020): ``psgs_w100.tsv`` with columns ``id, text, title``.
- ReMuQ (Luo et al. 2023): ``remuq/test.json`` (list of {"question", "img_id", "passage_id",
  ["answer"]}), ``remuq/images.tsv`` (``img_id<TAB>base64 image``), ``remuq/corpus.jsonl``
  ({"id", "text"[, "title"]} per line). Relevance is the gold passage id (paper-notes §13).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ..paper_files import (  # file names and sources, shared with the dry run
    CORPUS_FILES,
    OKVQA_ANNOTATIONS,
    OKVQA_QUESTIONS,
    REMUQ_FILES,
    SOURCES,
)
from .benchmark import Benchmark
from .kb import KBError, deduplicate


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file, the item and the fix."""


def need_file(path: Path, source: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path} not found: obtain it from {SOURCES[source]} and place it "
                           f"under data_root ({path.parent})")
    return path


def _lines(path: Path):
    """Yield (line number, text, byte offset after the line) of a UTF-8 file; a bad byte names
    its line."""
    with open(path, "rb") as fh:
        end = 0
        for i, raw in enumerate(fh, 1):
            end += len(raw)
            try:
                yield i, raw.decode("utf-8"), end
            except UnicodeDecodeError as err:
                raise DatasetError(f"{path}:{i}: line is not UTF-8 ({err.reason})") from err


def corpus_records(path: Path, id_col: str, delimiter: str, max_passages: int | None = None,
                   source: str = "gs112k") -> Iterator[tuple[int, str, str, int]]:
    """The passages of a corpus file (VRR CSV or DPR TSV), one (pid, text, title, byte offset of
    the record) at a time, whitespace runs and newlines collapsed; read line by line, so a corpus
    of any size streams, and `record_at` reads a passage back from its offset."""
    path = need_file(path, source)
    end = 0  # the byte offset after the last line the csv reader pulled: where a record starts
    lines = _lines(path)

    def text_lines():
        nonlocal end
        for _, text, after in lines:
            end = after
            yield text

    reader = csv.reader(text_lines(), delimiter=delimiter)
    header = next(reader, None) or []
    if id_col not in header or "text" not in header:
        raise DatasetError(f"{path}: needs columns {id_col!r} and 'text', has {header}")
    n = 0
    while max_passages is None or n < max_passages:
        start = end
        fields = next(reader, None)
        if fields is None:
            return
        if not fields:  # a blank line (as csv.DictReader, skipped)
            continue
        pid, text, title = parse_passage(path, dict(zip(header, fields, strict=False)), id_col,
                                         f"record {n + 1} after the header")
        yield pid, text, title, start
        n += 1


def parse_passage(path: Path, r: dict, id_col: str, where: str) -> tuple[int, str, str]:
    """(pid, text, title) of a record read as column -> field; `where` places it in the file for
    the error messages ("record 7 after the header", "the record at byte 1234")."""
    text = " ".join((r.get("text") or "").split())
    if not text:
        raise KBError(f"{path}: passage {r.get(id_col)} ({where}) is empty")
    try:
        pid = int(r.get(id_col))
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where}: passage id {r.get(id_col)!r} is not a "
                           "whole number") from None
    return pid, text, r.get("title") or ""


def record_at(fh, offset: int, header: list[str], delimiter: str) -> dict:
    """The record (column -> field) starting at byte `offset` of the open binary file `fh`."""
    fh.seek(offset)
    fields = next(csv.reader((raw.decode("utf-8") for raw in fh), delimiter=delimiter), None)
    if not fields:
        raise DatasetError(f"{fh.name}: no record at byte {offset}")
    return dict(zip(header, fields, strict=False))


def corpus_rows(path: Path, id_col: str, delimiter: str, max_passages: int | None = None,
                source: str = "gs112k") -> Iterator[tuple[int, str, str]]:
    """The passages of a corpus file (VRR CSV or DPR TSV), one (pid, text, title) at a time
    (`corpus_records` without the offsets)."""
    for pid, text, title, _ in corpus_records(path, id_col, delimiter, max_passages, source):
        yield pid, text, title


def read_corpus_csv(path: Path, id_col: str, delimiter: str, max_passages: int | None = None,
                    source: str = "gs112k") -> pd.DataFrame:
    """A passage corpus (VRR CSV or DPR TSV) as DataFrame(pid, text, title); newlines stripped."""
    return pd.DataFrame(corpus_rows(path, id_col, delimiter, max_passages, source),
                        columns=["pid", "text", "title"])


def read_okvqa(root: Path, split: str) -> pd.DataFrame:
    """OK-VQA questions of a COCO split ("train2014" / "val2014") with their answer lists."""
    qfile = need_file(root / OKVQA_QUESTIONS.format(split=split), "okvqa")
    afile = need_file(root / OKVQA_ANNOTATIONS.format(split=split), "okvqa")
    questions = json.loads(qfile.read_text(encoding="utf-8"))["questions"]
    answers = {a["question_id"]: a for a in json.loads(afile.read_text(encoding="utf-8"))
               ["annotations"]}
    rows = []
    for q in questions:
        ann = answers.get(q["question_id"])
        ans = sorted({a["answer"] for a in ann["answers"]}) if ann else []
        if not ans:
            raise DatasetError(f"{afile}: question {q['question_id']} has no answers")
        image = root / split / f"COCO_{split}_{q['image_id']:012d}.jpg"
        rows.append({"qid": str(q["question_id"]), "scene_id": int(q["image_id"]),
                     "image_path": str(image), "question": q["question"], "caption": "",
                     "answers": ans, "gold_pid": -1, "target_synset": -1})
    return pd.DataFrame(rows)


def read_remuq(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ReMuQ test questions (gold passage ids) and corpus; images decoded from the TSV on demand
    into ``remuq/images/<img_id>.jpg`` (once)."""
    test_file, images_file, corpus_file = (root / "remuq" / name for name in REMUQ_FILES)
    items = json.loads(need_file(test_file, "remuq").read_text(encoding="utf-8"))
    corpus = []
    for i, line, _ in _lines(need_file(corpus_file, "remuq")):
        if line.strip():
            d = json.loads(line)
            if not str(d.get("text", "")).strip():
                raise KBError(f"{corpus_file}:{i}: passage {d.get('id')} empty")
            corpus.append((int(d["id"]), " ".join(d["text"].split()), d.get("title", "")))
    img_dir = root / "remuq" / "images"
    img_dir.mkdir(exist_ok=True)
    for i, line, _ in _lines(need_file(images_file, "remuq")):
        img_id, _, b64 = line.rstrip("\n").partition("\t")
        target = img_dir / f"{img_id}.jpg"
        if not target.exists():
            try:
                from PIL import Image

                Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").save(target)
            except Exception as err:  # a corrupt image is named, never silently skipped
                raise DatasetError(f"{images_file}:{i}: image {img_id} "
                                   f"cannot be decoded ({err})") from err
    rows = [{"qid": f"remuq{i}", "scene_id": i, "image_path": str(img_dir / f"{q['img_id']}.jpg"),
             "question": q["question"], "caption": "", "answers": [str(q.get("answer", ""))],
             "gold_pid": int(q["passage_id"]), "target_synset": -1}
            for i, q in enumerate(items)]
    return pd.DataFrame(rows), pd.DataFrame(corpus, columns=["pid", "text", "title"])


def load_paper_dataset(cfg, max_passages: int | None = None) -> Benchmark:
    """OKVQA-GS112K, OKVQA-WK21M or ReMuQ as a `Benchmark` (splits train / test). WK21M's
    knowledge base is a `passage_file.PassageFile` (its texts stay in ``psgs_w100.tsv``), the
    others' a table."""
    if not cfg.data_root:
        raise DatasetError(f"profile {cfg.profile!r} with dataset {cfg.dataset!r} needs "
                           "data_root: pass overrides={'data_root': '/path/to/data'}")
    root = Path(cfg.data_root)
    if cfg.dataset == "remuq":
        questions, corpus = read_remuq(root)
        questions["split"] = "test"
        kb_name = "ReMuQ"
    elif cfg.dataset in ("okvqa_gs112k", "okvqa_wk21m"):
        questions = pd.concat([read_okvqa(root, "train2014").assign(split="train"),
                               read_okvqa(root, "val2014").assign(split="test")],
                              ignore_index=True)
        if cfg.dataset == "okvqa_gs112k":
            corpus, kb_name = read_corpus_csv(root / CORPUS_FILES[cfg.dataset], "kid", ",",
                                              max_passages), "GS112K"
        else:  # 21M passages: left in the file, read as needed (never the whole file at once)
            from ..passage_file import PassageFile
            from ..paths import artifacts_dir

            kb_name = "WK21M"
            corpus = PassageFile.scan(root / CORPUS_FILES[cfg.dataset], name=kb_name,
                                      root=artifacts_dir(cfg.profile, "01_data_prep"),
                                      max_passages=max_passages)
    else:
        raise DatasetError(f"unknown dataset {cfg.dataset!r}; use okmoji, okvqa_gs112k, "
                           "okvqa_wk21m or remuq")
    if isinstance(corpus, pd.DataFrame):
        corpus, dups = deduplicate(corpus, kb_name)
    else:  # a PassageFile drops its duplicates as it scans
        dups = corpus.duplicates
    scenes = questions[["scene_id", "split", "image_path"]].drop_duplicates("scene_id")
    return Benchmark(name=cfg.dataset, root=root, questions=questions, kb={kb_name: corpus},
                     objects=pd.DataFrame(), scenes=scenes.reset_index(drop=True), kb_dups=dups)
