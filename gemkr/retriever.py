"""Retrieval for your own picture, question and knowledge base, on a trained profile.

    from gemkr.retriever import Retriever
    r = Retriever.load(profile="default")          # what ./run_all.sh trained
    r.retrieve("photo.png", "What is the object on the left used for?", kb="KB-L", k=10)
    r.retrieve(img, "What is this made of?", kb="my_passages.jsonl", method="bm25")

It runs the notebooks' path for one query: the profile's YOLO detects objects -> their crops go
through the frozen ViT (object features) -> the caption of the detected labels joins the question
-> the object-aware prefix, visual tokens and LLM write clues under the FM-index constraint of the
chosen knowledge base -> the passages the clues occur in. ``method="bm25"``/``"minilm"`` search
question + caption, ``"clip-crops"`` the detected crops, so a user can compare on their input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .passage_file import PassageFile, passage_texts
from .tokenizer import clue_text

METHODS = ("gemkr", "bm25", "minilm", "clip-crops")
COLUMNS = ["rank", "passage_id", "text", "clue", "score"]


class InputError(ValueError):
    """A query the retriever cannot take (image, question, knowledge base, method)."""


MAX_PIXELS = 50_000_000  # a larger picture is refused by name (a decompression bomb otherwise)


def _rgb(im):
    """An RGB PIL image of any PIL mode: transparency composited on white (not dropped), 16- and
    32-bit grayscale scaled to 8 bits (``convert("RGB")`` clips them to white), palettes
    expanded."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and a.max(initial=0) <= 1.0 else \
            255.0 if a.max(initial=0) <= 255 else 65535.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L"
                               ).convert("RGB")
    if im.mode in ("P", "PA", "LA", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def _array_image(a: np.ndarray):
    from PIL import Image

    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise InputError(f"an image array must be HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA), got "
                         f"shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise InputError(f"an image array must be uint8 or uint16, got dtype {a.dtype} (scale it "
                         "to 0-255 and cast to uint8)")
    mode = "L" if a.ndim == 2 else {3: "RGB", 4: "RGBA"}[a.shape[2]]
    return _rgb(Image.fromarray(np.ascontiguousarray(a), mode))


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise InputError(f"{what} is {width}x{height} pixels, over the limit of {MAX_PIXELS:,}; "
                         "resize it (the detector sees it at a few hundred pixels anyway)")


def load_image(image):
    """An RGB PIL image from a path, a PIL image or an array (HxW gray, HxWx3 RGB or HxWx4 RGBA;
    uint8 or uint16). Transparency is composited on white; 16-bit pictures are scaled, not
    clipped; a picture over `MAX_PIXELS` or a file PIL cannot read is an `InputError`."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        _check_size(*image.size, "the image")
        return _rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            _check_size(image.shape[1], image.shape[0], "the image array")
        return _array_image(image)
    if isinstance(image, str | Path):
        path = Path(image)
        if path.is_dir():
            raise InputError(f"{path} is a folder: give an image file")
        if not path.is_file():
            raise InputError(f"image file {path} not found")
        try:
            with Image.open(path) as im:  # reads the header only: the size is known unloaded
                _check_size(*im.size, f"image {path}")
                im.load()
                return _rgb(im)
        except Image.DecompressionBombError as err:  # not an OSError: caught by name
            raise InputError(f"image {path} is too large to decode safely ({err}); resize it"
                             ) from err
        except UnidentifiedImageError as err:
            raise InputError(f"{path} is not an image file PIL can read") from err
        except OSError as err:
            raise InputError(f"cannot read image {path}: {err.strerror or err}") from err
    raise InputError(f"image must be a path, a PIL image or an image array, not "
                     f"{type(image).__name__}")


def draw_picture(objects: pd.DataFrame, names: list[str], seed: int, size: int = 224):
    """A new OKMoji-style picture of the named objects (glyphs installed with the kit), drawn
    by the benchmark's renderer from a seed of your choice; returns (PIL image, boxes table)."""
    from .data.render import render_scene

    rows = objects.reset_index(drop=True)
    missing = [n for n in names if n not in set(rows["name"])]
    if missing:
        raise InputError(f"no glyph for {missing}; names come from the objects table")
    picks = [int(rows.index[rows["name"] == n][0]) for n in names]
    img, placed = render_scene(seed, [rows.at[i, "char"] for i in picks], picks, size)
    boxes = pd.DataFrame([{"name": rows.at[p.obj, "name"], "x0": p.box[0], "y0": p.box[1],
                           "x1": p.box[2], "y1": p.box[3]} for p in placed])
    return img, boxes


def boxed(true_boxes: pd.DataFrame, detections: pd.DataFrame, min_iou: float = 0.5
          ) -> pd.DataFrame:
    """For each drawn object (`draw_picture`'s boxes): the detection that overlaps it most, its
    IoU, label and confidence, and whether it counts as found (IoU >= `min_iou`, the rule of
    notebook 02's recall table). An object no box covers reaches GeMKR neither as an object token
    nor as a caption name, so no clue can open with its name."""
    from .detect import iou

    rows = []
    for t in true_boxes.itertuples(index=False):
        box = (t.x0, t.y0, t.x1, t.y1)
        overlaps = [iou(box, (d.x0, d.y0, d.x1, d.y1)) for d in detections.itertuples()]
        best = int(np.argmax(overlaps)) if overlaps else -1
        score = overlaps[best] if overlaps else 0.0
        hit = detections.iloc[best] if score > 0 else None  # (no box touches it: none)
        rows.append({"drawn": t.name, "best_iou": score,
                     "detected_as": None if hit is None else hit["label"],
                     "conf": float("nan") if hit is None else float(hit["conf"]),
                     "found": score >= min_iou})
    return pd.DataFrame(rows)


class Retriever:
    """The trained pipeline of one profile, ready for single queries (see the module doc)."""

    def __init__(self, pipeline, yolo):
        self.p, self.cfg, self.yolo = pipeline, pipeline.cfg, yolo
        self.names = pipeline.bench.objects["name"].tolist()
        self._kbs: dict[str, tuple[pd.DataFrame, object, object]] = {}
        self._search: dict[tuple[str, str], object] = {}
        self._encoder = None

    @classmethod
    def load(cls, profile: str = "default", device: str = "cpu", seed: int = 0) -> Retriever:
        """Load what ``./run_all.sh --profile <profile>`` trained. Raises `NotTrainedError`
        naming the command to run when a model is missing (nothing trains here)."""
        from . import detect, trained
        from .config import get_config
        from .paths import REPO_ROOT

        cfg = get_config(profile, seed=seed)
        if not (REPO_ROOT / "artifacts" / profile / "04_training").is_dir():  # fail fast
            raise trained.NotTrainedError(f"the {profile!r} models are not trained here: run "
                                          f"./run_all.sh --profile {profile} first")
        try:
            pipe = trained.pipeline(cfg, device=device)
            weights = detect.detector_weights(cfg, pipe.bench)
        except (trained.NotTrainedError, FileNotFoundError) as err:
            raise trained.NotTrainedError(
                f"the {profile!r} models are not trained here: run ./run_all.sh --profile "
                f"{profile} (or notebooks 01-04) first ({err})") from err
        return cls(pipe, detect.load_yolo(weights))

    # ------------------------------------------------------------------ the picture
    def scene(self, image) -> dict:
        """Detections, caption and model inputs of one picture."""
        from .trained import QUERY_FIELDS, limited_reads

        # every setting this reads must be one the loaded models' cache keys cover (or decoding)
        with limited_reads("Retriever.scene", QUERY_FIELDS):
            return self._scene(image)

    @torch.no_grad()
    def _scene(self, image) -> dict:
        from .detect import caption, result_rows
        from .examples import picture_inputs

        img = load_image(image)
        # the PIL image itself: ultralytics reads a numpy array as BGR (OpenCV's order), so
        # np.asarray(img) would hand it red and blue swapped; the notebooks pass file paths
        res = self.yolo.predict(img, imgsz=self.cfg.det_imgsz, conf=self.cfg.det_conf,
                                max_det=self.cfg.max_objects, device="cpu", verbose=False)[0]
        dets = pd.DataFrame(result_rows(res, self.names, self.cfg.max_objects),
                            columns=["rank", "obj", "label", "conf", "x0", "y0", "x1", "y1"]
                            ).drop(columns="obj")
        boxes = dets[["x0", "y0", "x1", "y1"]].to_numpy()
        inputs = picture_inputs(self.p.clip.visual, [(img, boxes)], 1, self.cfg.vit_image_size,
                                self.cfg.max_objects)
        named = dets.loc[dets["conf"] >= self.cfg.caption_conf, "label"].tolist()
        return {"image": img, "detections": dets, "caption": caption(named),
                "names": list(dict.fromkeys(named)), **inputs}

    # ------------------------------------------------------------ knowledge bases
    def knowledge_base(self, kb: str | Path) -> tuple[pd.DataFrame, object, object]:
        """(passages with pid/id/text, index, the `kb.UserKB` of a file or None) of a built-in
        KB name or a knowledge base file."""
        from .kb import SUFFIXES, user_index

        key = str(kb)
        if key not in self._kbs:
            if key in self.p.bench.kb:
                passages = self.p.bench.kb[key]
                if not isinstance(passages, PassageFile):  # (WK21M stays in its file)
                    passages = passages[["pid", "text"]].assign(id=lambda d: d["pid"].astype(str))
                self._kbs[key] = (passages, self.p.indexes[key], None)
            elif Path(key).suffix.lower() in SUFFIXES or Path(key).exists():
                user = user_index(key, self.p.tok, self.cfg.tokenizer, self.cfg.profile)
                self._kbs[key] = (user.passages, user.index, user)
            else:
                raise InputError(f"unknown knowledge base {key!r}: use one of "
                                 f"{', '.join(self.p.bench.kb)} or a .jsonl/.csv/.tsv file")
        return self._kbs[key]

    def _vectors(self, kb: str) -> np.ndarray:
        from . import embeddings
        from .kb import user_vectors

        if self._encoder is None:
            self._encoder = embeddings.minilm_encoder()
        user = self.knowledge_base(kb)[2]
        if user is None:  # a built-in KB: notebook 03's vectors
            return embeddings.kb_embeddings(self.cfg.profile, self.p.bench.kb, self._encoder)[0][kb]
        return user_vectors(user, self._encoder)

    def _searcher(self, kb: str, method: str):
        from . import baselines, evaluate

        if (kb, method) not in self._search:
            passages = self.knowledge_base(kb)[0]
            if method == "bm25":
                s = baselines.BM25(passages)
            else:
                s = baselines.DenseText(passages, self._encoder, embeddings=self._vectors(kb))
                if method == "clip-crops":
                    s = evaluate.ClipDense(self.p.clip, self.p.clip_tokenizer, s)
            self._search[(kb, method)] = s
        return self._search[(kb, method)]

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, image, question: str, kb: str | Path = "KB-L", k: int = 10,
                 method: str = "gemkr") -> pd.DataFrame:
        """Ranked passages for one picture and question: columns rank, passage_id (the KB's or
        the file's id), text, clue (GeMKR's clue that found the passage), score (GeMKR: the
        clue's length-normalised log-probability; baselines: their similarity). `image`: a
        path, a PIL image, an HxWx3 uint8 array, or what `scene` returned for it."""
        from .trained import QUERY_FIELDS, limited_reads

        with limited_reads("Retriever.retrieve", QUERY_FIELDS):
            return self._retrieve(image, question, kb, k, method)

    def _retrieve(self, image, question: str, kb: str | Path, k: int, method: str):
        from .detect import input_text

        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        passages, index, _ = self.knowledge_base(kb)
        # a picture already run through `scene` (a dict) is not detected and encoded again
        scene = image if isinstance(image, dict) else self.scene(image)
        text = input_text(question.strip(), scene["caption"])
        if method == "gemkr":
            hits = self._gemkr(scene, text if self.cfg.use_caption else question.strip(), index)
        elif method == "clip-crops":
            pairs = self._searcher(str(kb), method).search_crops_scored(
                scene["objects"], scene["mask"], k)[0][0]
            hits = [(pid, "", score) for pid, score in pairs]
        else:
            pairs = self._searcher(str(kb), method).search_scored([text], k)[0][0]
            hits = [(pid, "", score) for pid, score in pairs]
        shown = _id_and_text(passages, [pid for pid, _, _ in hits[:k]])
        out = [{"rank": r, "passage_id": shown[pid][0], "text": shown[pid][1],
                "clue": clue, "score": score}
               for r, (pid, clue, score) in enumerate(hits[:k], 1)]
        return pd.DataFrame(out, columns=COLUMNS)

    def _gemkr(self, scene: dict, text: str, index) -> list[tuple[int, str, float]]:
        from .decoding import DecodeConfig, clue_hits
        from .model import Batch

        batch = Batch(scene["images"], scene["objects"], scene["mask"], [text], None,
                      scene.get("geometry"), captioned=[bool(self.cfg.use_caption)],
                      names=[scene.get("names", [])])
        clues = self.p.model.retrieve(batch, index, DecodeConfig.from_config(self.cfg))[0]
        return [(pid, clue_text(self.p.tok, c.tokens), float(c.score))
                for pid, c in clue_hits(clues).items()]

    def compare(self, image, questions: list[str], kb: str | Path = "KB-L", k: int = 5,
                methods: tuple[str, ...] = METHODS) -> pd.DataFrame:
        """Every method on every question, one long table (question, method + `retrieve`'s
        columns); the picture is detected and encoded once."""
        scene = self.scene(image)
        frames = [self.retrieve(scene, q, kb=kb, k=k, method=m).assign(question=q, method=m)
                  for q in questions for m in methods]
        return pd.concat(frames, ignore_index=True)[["question", "method", *COLUMNS]]


def picture_figure(scene: dict, title: str = ""):
    """The picture with the detector's boxes and labels (what the model's caption says)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.imshow(scene["image"])
    for d in scene["detections"].itertuples():
        ax.add_patch(Rectangle((d.x0, d.y0), d.x1 - d.x0, d.y1 - d.y0, fill=False, lw=2,
                               color="tab:red"))
        ax.text(d.x0, d.y0, f"{d.label} {d.conf:.2f}", color="white", fontsize=8, va="bottom",
                bbox={"facecolor": "tab:red", "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_axis_off()
    ax.set_title(title or scene["caption"], fontsize=9)
    return fig


def _id_and_text(passages, pids: list[int]) -> dict[int, tuple[str, str]]:
    """pid -> (the KB's own passage id, text) of the passages `pids`: from a table with an id
    column, or read from a `PassageFile` (whose ids are its pids)."""
    if isinstance(passages, PassageFile):
        texts = passage_texts(passages)
        return {pid: (str(pid), texts[pid]) for pid in pids}
    rows = passages.set_index("pid")
    return {pid: (rows.at[pid, "id"], rows.at[pid, "text"]) for pid in pids}
