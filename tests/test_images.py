"""`retriever.load_image`: every picture a user may hand the retriever becomes the RGB image a
person sees: transparency on white, 16-bit and palette pictures scaled, gray and RGBA arrays
accepted, and what cannot be read (a folder, a bomb, a wrong dtype) named as an InputError."""

import numpy as np
import pytest
from PIL import Image

from gemkr.retriever import MAX_PIXELS, InputError, load_image


def _rgba():
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 255  # red ...
    a[:2, :, 3] = 255  # ... opaque in the top half, fully transparent below
    return a


def test_transparency_is_composited_on_white(tmp_path):
    Image.fromarray(_rgba(), "RGBA").save(tmp_path / "a.png")
    for img in (_rgba(), Image.fromarray(_rgba(), "RGBA"), tmp_path / "a.png"):
        out = np.asarray(load_image(img))
        assert out[0, 0].tolist() == [255, 0, 0] and out[3, 0].tolist() == [255, 255, 255]
    half = _rgba()
    half[..., 3] = 128
    assert np.asarray(load_image(half))[0, 0].tolist() == [255, 127, 127]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    g16 = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0 .. 65535
    Image.fromarray(g16).save(tmp_path / "g16.png")
    expect = np.round(g16 / 257).astype(np.uint8)
    for img in (tmp_path / "g16.png", g16):
        out = np.asarray(load_image(img))
        assert out.shape == (4, 4, 3) and np.abs(out[..., 0].astype(int) - expect).max() <= 1
        assert out[..., 0].tolist() == out[..., 2].tolist()


def test_gray_palette_and_rgb_arrays(tmp_path):
    assert load_image(np.full((3, 5), 9, np.uint8)).getpixel((0, 0)) == (9, 9, 9)
    assert load_image(np.full((3, 5, 1), 9, np.uint8)).size == (5, 3)
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(rgb)), rgb)  # RGB stays RGB: no channel swap
    Image.fromarray(rgb).quantize(8).save(tmp_path / "p.png")
    pal = load_image(tmp_path / "p.png")
    assert pal.mode == "RGB" and np.abs(np.asarray(pal).astype(int) - rgb).mean() < 60


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), np.float32), "uint8 or uint16"),
    (np.zeros((4, 4, 2), np.uint8), "HxW \\(gray\\)"),
    (np.zeros(4, np.uint8), "HxW"),
    (3, "not int"),
])
def test_arrays_that_are_not_pictures(bad, message):
    with pytest.raises(InputError, match=message):
        load_image(bad)


def test_folders_and_oversized_pictures_are_named(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)
    side = int(MAX_PIXELS ** 0.5) + 10
    Image.new("L", (side, side)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="over the limit"):
        load_image(tmp_path / "big.png")
    with pytest.raises(InputError, match="over the limit"):
        load_image(np.zeros((side, side), np.uint8))


def test_a_decompression_bomb_is_an_input_error(tmp_path, monkeypatch):
    """Pillow's DecompressionBombError is not an OSError; it is caught by name."""
    import gemkr.retriever as r

    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x 1,000: an error
    monkeypatch.setattr(r, "MAX_PIXELS", 10 ** 9)
    with pytest.raises(InputError, match="too large to decode safely"):
        load_image(tmp_path / "bomb.png")
