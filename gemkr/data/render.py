"""Scene rendering: 1-4 OpenMoji glyphs on varied backgrounds with exact boxes (DESIGN §4).

Everything is a pure function of a scene's seed, so a scene can be re-rendered bit for bit (the
determinism check of notebook 01 does exactly that). Backgrounds mix four kinds so that a detector
cannot find objects by colour alone: two-colour gradients, smooth value noise, tinted CC0 textures
from scikit-image (grass, gravel, brick) and stripe/checker patterns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .objects import emoji_font_path

BACKGROUNDS = ("gradient", "noise", "texture", "pattern")
MAX_IOU = 0.10  # "limited overlap": boxes may touch, not hide each other


@dataclass(frozen=True)
class Placement:
    """One glyph in a scene; the box is exact (alpha > 0 pixels), in pixels, x1/y1 exclusive."""

    obj: int  # row of the object table
    box: tuple[int, int, int, int]
    size: int  # font size used
    flip: bool
    angle: float


class RenderError(RuntimeError):
    """A glyph rendered empty, or a scene could not be laid out."""


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(emoji_font_path(), size)


def render_glyph(char: str, size: int, flip: bool = False, angle: float = 0.0) -> Image.Image:
    """The glyph as a tight RGBA sprite (transparent outside the drawing)."""
    canvas = Image.new("RGBA", (int(size * 1.5), int(size * 1.5)), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((size // 8, size // 8), char, font=_font(size),
                                embedded_color=True)
    bbox = canvas.getbbox()
    if bbox is None:
        raise RenderError(f"glyph U+{ord(char):X} renders empty at size {size}: not in the "
                          "OpenMoji COLRv0 font; remove it from objects.csv")
    sprite = canvas.crop(bbox)
    if flip:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if angle:
        sprite = sprite.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        sprite = sprite.crop(sprite.getbbox())
    return sprite


@functools.lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    from skimage import data  # bundled CC0 images, no download

    return tuple(f().astype(np.float32) / 255.0 for f in (data.grass, data.gravel, data.brick))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.15, 0.95, size=3).astype(np.float32)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB float32 (size, size, 3) background of a random kind."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    c0, c1 = _colour(rng), _colour(rng)
    if kind == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        t = (np.cos(theta) * xx + np.sin(theta) * yy)
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
    elif kind == "noise":
        cells = int(rng.integers(3, 9))
        grid = rng.random((cells, cells)).astype(np.float32)
        t = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))
        t = np.clip(t, 0, 1)
    elif kind == "texture":
        tex = _textures()[rng.integers(3)]
        side = int(rng.integers(size, tex.shape[0] + 1)) if size < tex.shape[0] else tex.shape[0]
        y, x = rng.integers(0, tex.shape[0] - side + 1, size=2)
        crop = Image.fromarray(tex[y:y + side, x:x + side])
        t = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
    else:  # stripes or checker
        period = int(rng.integers(max(size // 16, 2), max(size // 4, 3)))
        yy, xx = np.mgrid[0:size, 0:size]
        t = ((xx // period + (yy // period if rng.random() < 0.5 else 0)) % 2).astype(np.float32)
        t = 0.25 + 0.5 * t
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def layout(rng: np.random.Generator, chars: list[str], size: int,
           objs: list[int]) -> list[tuple[Placement, Image.Image]]:
    """Place each glyph at a random scale, position, flip and small rotation, overlap-limited."""
    placed: list[tuple[Placement, Image.Image]] = []
    for obj, char in zip(objs, chars, strict=True):
        for attempt in range(60):
            shrink = 0.85 ** (attempt // 15)  # crowded scene: try smaller glyphs
            frac = rng.uniform(0.22, 0.42 if len(chars) > 2 else 0.55) * shrink
            font_size = max(8, int(round(size * frac / 4)) * 4)  # sizes on a grid: font cache
            flip, angle = bool(rng.random() < 0.5), float(rng.uniform(-15, 15))
            sprite = render_glyph(char, font_size, flip, angle)
            w, h = sprite.size
            if w >= size or h >= size:
                continue
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = (x, y, x + w, y + h)
            if all(_iou(box, p.box) <= MAX_IOU for p, _ in placed):
                placed.append((Placement(obj, box, font_size, flip, angle), sprite))
                break
        else:
            raise RenderError(f"could not place {len(chars)} glyphs in a {size}px scene")
    return placed


def render_scene(seed: int, chars: list[str], objs: list[int],
                 size: int) -> tuple[Image.Image, list[Placement]]:
    """Render one scene deterministically from `seed`; returns the RGB image and placements."""
    rng = np.random.default_rng(seed)
    bg = background(rng, size)
    placed = layout(rng, chars, size, objs)
    img = Image.fromarray((np.clip(bg, 0, 1) * 255).astype(np.uint8), "RGB").convert("RGBA")
    for p, sprite in placed:
        img.alpha_composite(sprite, dest=p.box[:2])
    # exact boxes: the visible alpha extent (a later glyph may cover an edge; IoU limit keeps
    # that small, and the box stays the glyph's own extent as in detection datasets)
    return img.convert("RGB"), [p for p, _ in placed]
