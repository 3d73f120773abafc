from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.classification.images import CorruptImageError, load_image, to_rgb


def test_grayscale_and_bilevel_replicate_channels():
    gray = Image.fromarray(np.array([[0, 128], [200, 255]], dtype=np.uint8), mode="L")
    out = np.asarray(to_rgb(gray))
    assert out.shape == (2, 2, 3) and (out == np.asarray(gray)[..., None]).all()
    assert np.asarray(to_rgb(gray.convert("1"))).max() == 255


def test_rgba_is_composited_on_white():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent (red hidden under alpha 0)
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black
    out = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA"))).astype(int)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert np.abs(out[0, 2] - 127).max() <= 1


def test_palette_with_and_without_transparency():
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    assert np.asarray(to_rgb(pal)).tolist() == [[[0, 255, 0], [10, 20, 30]]]
    pal.info["transparency"] = 0
    assert np.asarray(to_rgb(pal)).tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_cmyk_matches_pil_conversion(tmp_path):
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure red in CMYK
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]
    cmyk.save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").mode == "RGB"


def test_16bit_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    Image.fromarray(values).save(tmp_path / "deep.png")
    img = Image.open(tmp_path / "deep.png")
    assert img.mode.startswith("I")  # PIL reads 16-bit PNGs as I;16 or I
    out = np.asarray(load_image(tmp_path / "deep.png"))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (np.asarray(Image.open(tmp_path / "deep.png").convert("RGB"))[0, 1:, 0] == 255).all()  # PIL clips


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.jpg", "text.png"):
        with pytest.raises(CorruptImageError, match=name):
            load_image(tmp_path / name)
