"""`python -m gemkr`: the index command, and every bad input of `retrieve` gives exit status 2
and one line on stderr naming the problem (before any model loads)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gemkr import paths
from gemkr.__main__ import main
from gemkr.paths import REPO_ROOT


@pytest.fixture()
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")  # caches and "trained" models
    img = tmp_path / "pic.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(img)
    good = tmp_path / "kb.jsonl"
    good.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in
                            enumerate(["banana: a yellow fruit", "guitar: six strings"])))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    return {"img": img, "kb": good, "text": text, "tmp": tmp_path}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_builds_then_reuses(files, capsys):
    code, out, err = _run(capsys, "index", files["kb"], "--profile", "smoke")
    assert code == 0 and "2 passages" in out and "built" in out, (out, err)
    code, out, _ = _run(capsys, "index", files["kb"], "--profile", "smoke")
    assert code == 0 and "reused" in out


@pytest.mark.parametrize("argv, message", [
    (["index", "{tmp}/missing.jsonl"], "not found"),
    (["index", "{tmp}/empty.jsonl"], "holds no passages"),
    (["index", "{kb}", "--profile", "nope"], "unknown profile 'nope'"),
    (["retrieve", "--image", "{tmp}/missing.png", "--question", "q?"], "image file"),
    (["retrieve", "--image", "{text}", "--question", "q?"], "is not an image file"),
    (["retrieve", "--image", "{img}", "--question", "  "], "the question is empty"),
    (["retrieve", "--image", "{img}", "--question", "q?", "--profile", "nope"],
     "unknown profile 'nope'"),
    (["retrieve", "--image", "{img}", "--question", "q?", "--profile", "small"],
     "run ./run_all.sh --profile small"),
    (["retrieve", "--question", "q?"], "required: --image"),
    # checked before any model loads: the repo here has no trained models at all
    (["retrieve", "--image", "{img}", "--question", "q?", "--method", "dense"],
     "unknown --method 'dense'"),
    (["retrieve", "--image", "{img}", "--question", "q?", "-k", "0"], "-k must be at least 1"),
    (["retrieve", "--image", "{img}", "--question", "q?", "--kb", "KB-XL"], "unknown --kb 'KB-XL'"),
    (["retrieve", "--image", "{img}", "--question", "q?", "--kb", "{tmp}/bad.csv"],
     "bad.csv line 2: 3 fields"),
    (["retrieve", "--image", "{tmp}", "--question", "q?"], "is a folder"),
    (["index", "{tmp}"], "is a folder"),
    (["retrieve", "--image", "{tmp}/huge.png", "--question", "q?"], "over the limit"),
    (["search"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(files, capsys, argv, message):
    (files["tmp"] / "empty.jsonl").write_text("")
    (files["tmp"] / "bad.csv").write_text("id,text\n1,x,y\n")
    Image.new("L", (8000, 7000)).save(files["tmp"] / "huge.png")  # 56 M pixels
    argv = [a.format(tmp=files["tmp"], kb=files["kb"], text=files["text"], img=files["img"])
            for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_module_entry_point_exit_status(files):
    """The real command, as a script calls it."""
    proc = subprocess.run([sys.executable, "-m", "gemkr", "retrieve", "--image",
                           str(files["text"]), "--question", "what?"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"gemkr: {files['text']} is not an image file PIL can read"]


@pytest.mark.parametrize("error", ["detector", "tokenizer", "safetensors", "weights", "key"])
def test_file_errors_from_loading_are_one_line(files, capsys, monkeypatch, error):
    """A wrong detector file, a tokenizer that is not the LLM's, a corrupt weights file, weights
    of another configuration or a cache stored for other settings met while the models load is
    named in one line, exit 2 (no traceback)."""
    from safetensors import SafetensorError

    from gemkr import retriever
    from gemkr.detect import DetectorFileError
    from gemkr.model import TokenizerMismatchError
    from gemkr.train import WeightsMismatchError
    from gemkr.trained import CacheKeyError

    raised = {"detector": DetectorFileError("yolo.pt is a classification model"),
              "tokenizer": TokenizerMismatchError("tokenizer ids are not the LLM's"),
              "safetensors": SafetensorError("Error while deserializing header"),
              "weights": WeightsMismatchError("gemkr-full holds other trainable tensors"),
              "key": CacheKeyError("gemkr-full was stored for other settings")}[error]

    def load(*args, **kwargs):
        raise raised

    monkeypatch.setattr(retriever.Retriever, "load", classmethod(load))
    code, out, err = _run(capsys, "retrieve", "--image", files["img"], "--question", "q?",
                          "--kb", files["kb"], "--profile", "smoke")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert str(raised) in err
