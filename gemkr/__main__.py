"""Command line: index a knowledge base of your own, retrieve for a picture and a question.

    python -m gemkr index KB_FILE [--profile P]
    python -m gemkr retrieve --image IMG --question TEXT [--kb KB-L|KB_FILE] [--profile P]
                             [--method gemkr|bm25|minilm|clip-crops] [-k 10] [--json]
    python -m gemkr bench-index [--tokens 2e9] [--workdir DIR]   # the index at WK21M scale

Bad input (a missing or unreadable image, an empty question, a knowledge base file that cannot be
used, an unknown profile, method, k or knowledge base name, models not trained yet, a corrupt
weights file) exits with status 2 and one line on stderr. The arguments, the image and the
knowledge base file are checked before any model loads.
"""

from __future__ import annotations

import os

# progress bars of the libraries (tqdm, huggingface_hub, transformers) stay off a command's
# stderr; set before anything imports them (tqdm reads its environment at import)
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see python -m gemkr {self.prog.split()[-1]} --help)")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m gemkr", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ix = sub.add_parser("index", help="build (or reuse) the index of a knowledge base file")
    ix.add_argument("kb_file", help="JSONL ({id, text} per line), CSV or TSV (id, text columns)")
    ix.add_argument("--profile", default="default", help="whose tokenizer (default: default)")
    ix.add_argument("--force", action="store_true", help="rebuild even when cached")
    rt = sub.add_parser("retrieve", help="ranked passages for a picture and a question")
    rt.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    rt.add_argument("--question", required=True)
    rt.add_argument("--kb", default="KB-L", help="KB-S, KB-M, KB-L or a knowledge base file")
    rt.add_argument("--profile", default="default", help="trained profile (default: default)")
    rt.add_argument("--method", default="gemkr", help="gemkr | bm25 | minilm | clip-crops")
    rt.add_argument("-k", type=int, default=10, help="passages to return (GeMKR: at most 10)")
    rt.add_argument("--json", action="store_true", help="one JSON array on stdout")
    # listed for --help; `main` hands its arguments to gemkr.bench_wk21m before parsing
    sub.add_parser("bench-index", help="build and measure a corpus index of WK21M's size "
                   "(python -m gemkr bench-index --help)")
    return ap


def _quiet() -> None:
    """Library chatter (progress bars, warnings) stays off stdout/stderr of a command."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _index(args) -> int:
    from .config import get_config
    from .kb import user_index
    from .tokenizer import load_tokenizer

    cfg = get_config(args.profile)
    if not Path(args.kb_file).exists():
        raise UsageError(f"knowledge base file {args.kb_file} not found")
    user = user_index(args.kb_file, load_tokenizer(cfg.tokenizer), cfg.tokenizer, cfg.profile,
                      force=args.force)
    size = sum(p.stat().st_size for p in (user.folder / "index").rglob("*") if p.is_file())
    print(f"{args.kb_file}: {len(user.passages)} passages, {user.index.num_tokens} tokens, "
          f"index {size} bytes, {user.seconds:.2f} s "
          f"({'built' if user.built else 'reused'}: {user.folder})")
    return 0


def _check_retrieve(args) -> None:
    """Every argument of `retrieve`, before a model loads (that takes seconds)."""
    from .config import get_config
    from .kb import SUFFIXES, load_passages
    from .retriever import METHODS

    cfg = get_config(args.profile)
    if args.method not in METHODS:
        raise UsageError(f"unknown --method {args.method!r}; choose one of {', '.join(METHODS)}")
    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    if not args.question.strip():
        raise UsageError("the question is empty")
    kb = Path(args.kb)
    if kb.suffix.lower() in SUFFIXES or kb.exists():
        load_passages(kb)  # a bad file is named here, with its line
    elif args.kb not in cfg.kb_names:
        raise UsageError(f"unknown --kb {args.kb!r}: use one of {', '.join(cfg.kb_names)} "
                         "(built into the profile) or a .jsonl/.csv/.tsv file")


def _retrieve(args) -> int:
    import pandas as pd

    from .retriever import Retriever, load_image

    image = load_image(args.image)  # bad input fails before the models load
    _check_retrieve(args)
    table = Retriever.load(profile=args.profile).retrieve(
        image, args.question, kb=args.kb, k=args.k, method=args.method)
    if args.json:
        print(json.dumps(table.to_dict(orient="records"), ensure_ascii=False))
    else:
        with pd.option_context("display.max_colwidth", 80, "display.width", 160):
            print(table.to_string(index=False))
    return 0


def _named_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input or files, not a bug: one line and exit 2."""
    from .config import ConfigError
    from .detect import DetectorFileError
    from .eva import VisionWeightsError
    from .kb import KBFileError
    from .model import LLMFileError, TokenizerMismatchError
    from .retriever import InputError
    from .train import WeightsMismatchError
    from .trained import CacheKeyError, NotTrainedError

    return (UsageError, ConfigError, KBFileError, InputError, NotTrainedError,
            DetectorFileError, TokenizerMismatchError, LLMFileError, VisionWeightsError,
            WeightsMismatchError, CacheKeyError)


def main(argv: list[str] | None = None) -> int:
    from safetensors import SafetensorError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench-index"]:  # a benchmark, not a query: its own arguments and output
        from .bench_wk21m import main as bench_index

        try:
            bench_index(argv[1:])
        except OSError as err:  # not enough free disk for even the smallest useful size
            print(f"gemkr: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        args = _parser().parse_args(argv)
        _quiet()
        return _index(args) if args.command == "index" else _retrieve(args)
    except _named_errors() as err:
        print(f"gemkr: {err}", file=sys.stderr)
        return 2
    except SafetensorError as err:  # a truncated or corrupt weights file in artifacts/
        print(f"gemkr: a weights file under artifacts/ is corrupt ({err}); delete it and run "
              "./run_all.sh again to retrain that stage", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
