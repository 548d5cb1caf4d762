"""The files the `paper` profile reads, where each is expected and where it is published.

Nothing of the paper's setting ships with the kit or downloads at run time: the researcher brings
the OK-VQA data, the EVA01-g-14 checkpoint, LLaMA-7B and a YOLO detector. They live under one
folder, ``$GEMKR_PAPER_ROOT`` (default ``<repo>/paper_files/``), with the layout below; each can
be pointed elsewhere by its own environment variable (papermill's kernels inherit the
environment, so ``run_all.sh`` needs no extra parameters)::

    paper_files/
      data/           GEMKR_DATA_ROOT     OK-VQA, COCO images, the corpus (gemkr/data/loaders.py)
      eva01_g14.bin   GEMKR_EVA_WEIGHTS   open_clip checkpoint of EVA01-g-14 (.bin/.safetensors)
      llama-7b/       GEMKR_LLAMA         LLaMA-7B in Hugging Face format, with its tokenizer
      yolo.pt         GEMKR_YOLO_WEIGHTS  an ultralytics *detection* checkpoint

`required(cfg)` lists them; ``./run_all.sh --profile paper --dry-run`` prints that list and exits
non-zero while any is missing. Only the standard library is used here: the check runs before the
environment is installed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SOURCES = {
    "okvqa": "https://okvqa.allenai.org (questions, annotations) and https://cocodataset.org "
             "(train2014 / val2014 images)",
    "gs112k": "the VRR repository https://github.com/luomancs/retriever_reader_for_okvqa "
              "(okvqa_train_corpus.csv)",
    "wk21m": "the DPR repository https://github.com/facebookresearch/DPR (psgs_w100.tsv)",
    "remuq": "https://github.com/luomancs/ReMuQ (test set, images TSV, corpus)",
    "eva": "open_clip's EVA01-g-14 / laion400m_s11b_b41k: https://huggingface.co/timm/"
           "eva_giant_patch14_clip_224.laion400m_s11b_b41k (open_clip_pytorch_model.bin)",
    "llama": "LLaMA-1 7B from Meta (https://github.com/meta-llama/llama, by request) converted "
             "with transformers' convert_llama_weights_to_hf.py; the official GeMKR README "
             "links https://huggingface.co/nyanko7/LLaMA-7B",
    "yolo": "any ultralytics detection checkpoint (the paper's YOLOv7 weights were not "
            "released): e.g. yolov8x.pt from https://github.com/ultralytics/assets/releases, or "
            "one trained on your images with gemkr.detect.train_yolo",
}

# The published file names, read by `data.loaders` and checked by `required` (one list, so the dry
# run and the loaders cannot drift apart).
OKVQA_QUESTIONS = "OpenEnded_mscoco_{split}_questions.json"
OKVQA_ANNOTATIONS = "mscoco_{split}_annotations.json"
CORPUS_FILES = {"okvqa_gs112k": "okvqa_train_corpus.csv", "okvqa_wk21m": "psgs_w100.tsv"}
REMUQ_FILES = ("test.json", "images.tsv", "corpus.jsonl")  # under data_root/remuq/

# setting -> (environment variable, path under the root)
LOCATIONS = {
    "data_root": ("GEMKR_DATA_ROOT", "data"),
    "eva_weights": ("GEMKR_EVA_WEIGHTS", "eva01_g14.bin"),
    "llm": ("GEMKR_LLAMA", "llama-7b"),
    "yolo_weights": ("GEMKR_YOLO_WEIGHTS", "yolo.pt"),
}
PAPER_LLM = "llama-7b"  # the paper profile's placeholder for `llm` and `tokenizer`


def paper_root() -> Path:
    return Path(os.environ.get("GEMKR_PAPER_ROOT", ROOT / "paper_files")).expanduser()


def default_path(setting: str) -> str:
    """Where the `paper` profile looks for `setting` unless overridden."""
    env, rel = LOCATIONS[setting]
    return str(Path(os.environ[env]).expanduser() if os.environ.get(env) else paper_root() / rel)


def resolve(values: dict, given: set[str]) -> dict:
    """The `paper` profile's path settings filled in: each one not in `given` (overrides) from
    its environment variable or the paper root; the tokenizer is the LLM's unless given."""
    out = {}
    for setting in LOCATIONS:
        if setting not in given and values[setting] in (None, PAPER_LLM):
            out[setting] = default_path(setting)
    if "tokenizer" not in given and values["tokenizer"] == PAPER_LLM:
        out["tokenizer"] = out.get("llm", values["llm"])
    return out


@dataclass(frozen=True)
class Need:
    """One file or folder the profile reads."""

    what: str
    setting: str
    path: Path
    source: str
    problem: str | None  # None: present and of the expected form

    @property
    def present(self) -> bool:
        return self.problem is None


def _file(path: Path) -> str | None:
    if not path.exists():
        return "missing"
    return None if path.is_file() and path.stat().st_size > 0 else "not a non-empty file"


def _folder(path: Path) -> str | None:
    if not path.exists():
        return "missing"
    return None if path.is_dir() else "not a folder"


def hf_model_problem(path: Path) -> str | None:
    """Why `path` is not a Hugging Face causal-LM folder with weights and a tokenizer (or None)."""
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "not a folder (a Hugging Face model is a folder with config.json)"
    try:
        conf = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        return "no config.json: not a Hugging Face model folder"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"config.json is not JSON ({err})"
    if not isinstance(conf, dict) or "model_type" not in conf:
        return "config.json has no model_type: not a Hugging Face model config"
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        return "no weights (*.safetensors or pytorch_model*.bin)"
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        return "no tokenizer (tokenizer.json or tokenizer.model)"
    return None


def dataset_files(dataset: str, root: Path) -> list[tuple[str, Path, str, bool]]:
    """(what, path, source key, is a folder) of every file a paper dataset is read from."""
    okvqa = [(f"OK-VQA {kind} {split}", root / name.format(split=split), "okvqa", False)
             for split in ("train2014", "val2014")
             for kind, name in (("questions", OKVQA_QUESTIONS),
                                ("annotations", OKVQA_ANNOTATIONS))]
    images = [(f"COCO {split} images", root / split, "okvqa", True)
              for split in ("train2014", "val2014")]
    if dataset == "okvqa_gs112k":
        return [*okvqa, *images, ("GS112K corpus", root / CORPUS_FILES[dataset], "gs112k",
                                  False)]
    if dataset == "okvqa_wk21m":
        return [*okvqa, *images, ("WK21M corpus", root / CORPUS_FILES[dataset], "wk21m", False)]
    if dataset == "remuq":
        return [(f"ReMuQ {name}", root / "remuq" / name, "remuq", False)
                for name in REMUQ_FILES]
    return []


def required(cfg) -> list[Need]:
    """Every local file `cfg` reads that the kit does not build itself (empty for the built-in
    benchmark with the kit's own models)."""
    needs = []
    if cfg.dataset != "okmoji":
        root = Path(cfg.data_root or default_path("data_root"))
        for what, path, source, folder in dataset_files(cfg.dataset, root):
            needs.append(Need(what, "data_root", path, SOURCES[source],
                              _folder(path) if folder else _file(path)))
    if cfg.vision != "tiny_vit":
        path = Path(cfg.eva_weights or default_path("eva_weights"))
        needs.append(Need(f"{cfg.vision} checkpoint (open_clip)", "eva_weights", path,
                          SOURCES["eva"], _file(path)))
    if cfg.llm not in ("tiny_llama", "smollm2"):
        path = Path(cfg.llm)
        needs.append(Need("LLM (Hugging Face folder)", "llm", path, SOURCES["llama"],
                          hf_model_problem(path)))
        if cfg.tokenizer not in ("smollm2", cfg.llm):
            tok = Path(cfg.tokenizer)
            needs.append(Need("LLM tokenizer", "tokenizer", tok, SOURCES["llama"],
                              _folder(tok)))
    if cfg.yolo_weights or (cfg.profile == "paper" and not cfg.det_oracle_boxes):
        path = Path(cfg.yolo_weights or default_path("yolo_weights"))
        needs.append(Need("YOLO detector (ultralytics .pt)", "yolo_weights", path,
                          SOURCES["yolo"], _file(path)))
    return needs


def report(needs: list[Need]) -> str:
    """The list as a user reads it: one block per file, present or what is wrong, where to get it
    and which environment variable moves it."""
    lines = [f"The files this profile reads ({sum(n.present for n in needs)} of {len(needs)} "
             f"ready; root {paper_root()}, set GEMKR_PAPER_ROOT to move it):"]
    for n in needs:
        env = LOCATIONS.get(n.setting, ("", ""))[0]
        mark = "ok     " if n.present else "MISSING" if n.problem == "missing" else "BAD    "
        lines.append(f"  [{mark}] {n.what}: {n.path}" + ("" if n.present else f" ({n.problem})"))
        if not n.present:
            lines.append(f"            source: {n.source}")
            if env:
                lines.append(f"            or point {env} at your copy")
    return "\n".join(lines)
