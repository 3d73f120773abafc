"""The shared image-reading policy (tasks.common.images), one test per rule."""

from __future__ import annotations

import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from tasks.common.images import ImageReadError, check_image, full_scale, read_image, read_pil


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def insert_png_exif(path, orientation: int) -> None:
    """Add an eXIf chunk right after IHDR (where writers put it) to a PNG written by OpenCV."""
    data = path.read_bytes()
    payload = exif_with_orientation(orientation)[6:]  # a PNG eXIf chunk holds the TIFF part, no "Exif\0\0"
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])


def quadrants(height: int, width: int) -> np.ndarray:
    """An image whose four quadrants have distinct flat colours (survive JPEG; show every turn and flip)."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:] = (230, 30, 30), (30, 230, 30)
    image[h:, :w], image[h:, w:] = (30, 30, 230), (230, 230, 30)
    return image


def expected_8bit(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


# ------------------------------------------------------------------------------------------ orientation


def test_jpeg_with_orientation_6_reads_turned_upright(tmp_path):
    stored = quadrants(40, 24)  # 40 tall as stored; orientation 6 = shown turned 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif_with_orientation(6))
    raw = np.asarray(Image.open(tmp_path / "phone.jpg").convert("RGB"))  # PIL without the EXIF turn
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (24, 40, 3)
    assert np.array_equal(image, np.rot90(raw, -1))
    # Turned clockwise, the stored bottom-left (blue) quadrant is the top-left one of the view, and so on.
    centres = [image[6, 10], image[6, 30], image[18, 10], image[18, 30]]
    expected = [(30, 30, 230), (230, 30, 30), (230, 230, 30), (30, 230, 30)]
    assert np.abs(np.array(centres, int) - expected).max() < 8
    header = check_image(tmp_path / "phone.jpg")
    assert (header.width, header.height, header.orientation) == (40, 24, 6)
    assert header.stored_size == (24, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_as_exif_transpose_also_for_16bit(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    eight = (stored >> 8).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "a.png", exif=exif_with_orientation(orientation))
    turned = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "a.png")))
    assert np.array_equal(read_image(tmp_path / "a.png"), turned)
    # A 16-bit RGB PNG goes through OpenCV; its pixels must turn exactly as PIL turns the 8-bit copy.
    cv2.imwrite(str(tmp_path / "deep.png"), stored[..., ::-1])
    insert_png_exif(tmp_path / "deep.png", orientation)
    deep = read_image(tmp_path / "deep.png", keep_depth=True)
    assert deep.dtype == np.uint16 and np.array_equal((deep >> 8).astype(np.uint8), turned)
    header = check_image(tmp_path / "deep.png")
    assert (header.height, header.width) == turned.shape[:2]


# ----------------------------------------------------------------------------------------- transparency


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent: the red under alpha 0 must not show
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black over white
    rgba[0, 3] = (10, 20, 30, 51)  # 20% of (10, 20, 30), 80% white
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    colour, alpha = rgba[..., :3].astype(float), rgba[..., 3:].astype(float) / 255
    assert np.array_equal(out, np.round(colour * alpha + 255 * (1 - alpha)).astype(np.uint8))
    assert out[0, :3].tolist() == [[255, 0, 0], [255, 255, 255], [127, 127, 127]]
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque, mode="RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_image(tmp_path / "opaque.png"), opaque[..., :3])


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").tolist() == [[[0, 255, 0], [10, 20, 30]]]
    palette.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png").tolist() == [[[255, 255, 255], [10, 20, 30]]]
    palette.save(tmp_path / "pt.gif", transparency=0)
    assert read_image(tmp_path / "pt.gif").tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_colour_key_transparency_of_an_rgb_png(tmp_path):
    pixels = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "k.png", transparency=(1, 2, 3))
    assert read_image(tmp_path / "k.png").tolist() == [[[255, 255, 255], [4, 5, 6]]]


def test_gray_with_alpha_is_composited_over_white(tmp_path):
    la = np.array([[[100, 255], [100, 0], [0, 102]]], np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    gray = read_image(tmp_path / "la.png", channels=1)
    assert gray.shape == (1, 3, 1) and gray[0, :, 0].tolist() == [100, 255, 153]
    assert np.array_equal(read_image(tmp_path / "la.png"), np.repeat(gray, 3, axis=-1))
    assert read_image(tmp_path / "la.png", channels=None).shape == (1, 3, 1)


# ---------------------------------------------------------------------------------------------- modes


def test_cmyk_jpeg_becomes_rgb_by_pil_conversion(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # pure red
    image = read_image(tmp_path / "c.jpg")
    assert image.shape == (16, 16, 3)
    assert np.array_equal(image, np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")))
    assert np.abs(image.astype(int) - (255, 0, 0)).max() < 8


def test_channels_gray_rgb_and_native(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    gray = read_image(tmp_path / "rgb.png", channels=1)
    assert np.array_equal(gray[..., 0], np.asarray(Image.open(tmp_path / "rgb.png").convert("L")))
    assert read_image(tmp_path / "rgb.png", channels=None).shape == (6, 5, 3)
    Image.fromarray(rgb[..., 0]).convert("1").save(tmp_path / "bits.png")
    bits = read_image(tmp_path / "bits.png", channels=None)
    assert bits.shape == (6, 5, 1) and set(np.unique(bits)) <= {0, 255}
    assert read_pil(tmp_path / "rgb.png").mode == "RGB"
    assert np.array_equal(np.asarray(read_pil(tmp_path / "rgb.png", "L")), gray[..., 0])
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        read_image(tmp_path / "rgb.png", channels=4)


# ---------------------------------------------------------------------------------------------- depth

VALUES = np.array([[0, 128, 129, 257, 1000, 32767, 32896, 65280, 65535]], np.uint16)


def test_16bit_gray_png_is_scaled_by_255_over_65535(tmp_path):
    Image.fromarray(VALUES).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png", channels=1)
    assert out.dtype == np.uint8 and np.array_equal(out[..., 0], expected_8bit(VALUES))
    assert out[0].ravel().tolist() == [0, 0, 1, 1, 4, 127, 128, 254, 255]
    # A dim image keeps its dim values: the scale is fixed, not the image's own maximum.
    Image.fromarray(np.array([[0, 1000]], np.uint16)).save(tmp_path / "dim.png")
    assert read_image(tmp_path / "dim.png")[0, :, 0].tolist() == [0, 4]


def test_16bit_rgb_png_is_scaled_by_255_over_65535(tmp_path):
    values = np.stack([VALUES, VALUES[:, ::-1], np.full_like(VALUES, 40000)], axis=-1)
    cv2.imwrite(str(tmp_path / "rgb16.png"), values[..., ::-1])  # OpenCV writes BGR
    assert Image.open(tmp_path / "rgb16.png").mode == "RGB"  # PIL alone would cut it to 8 bits
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint8 and np.array_equal(out, expected_8bit(values))


def test_keep_depth_returns_the_16bit_values(tmp_path):
    Image.fromarray(VALUES).save(tmp_path / "g16.png")
    gray = read_image(tmp_path / "g16.png", channels=None, keep_depth=True)
    assert gray.dtype == np.uint16 and np.array_equal(gray[..., 0], VALUES)
    assert full_scale(gray.dtype) == 65535.0
    rgb = np.random.default_rng(1).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.tif"), rgb[..., ::-1])
    assert np.array_equal(read_image(tmp_path / "rgb16.tif", keep_depth=True), rgb)
    assert np.array_equal(read_image(tmp_path / "g16.png", keep_depth=True), np.repeat(gray, 3, -1))


def test_16bit_rgba_is_composited_over_white_at_full_depth(tmp_path):
    rgba = np.array([[[1000, 2000, 3000, 65535], [1000, 2000, 3000, 0], [0, 0, 0, 32768]]], np.uint16)
    cv2.imwrite(str(tmp_path / "rgba16.png"), rgba[..., [2, 1, 0, 3]])
    deep = read_image(tmp_path / "rgba16.png", keep_depth=True)
    assert deep.dtype == np.uint16
    assert deep[0].tolist() == [[1000, 2000, 3000], [65535] * 3, [32767] * 3]
    assert np.array_equal(read_image(tmp_path / "rgba16.png"), expected_8bit(deep))


def test_float_image_is_taken_as_0_to_1(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0]], np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255, 255, 0]
    deep = read_image(tmp_path / "f.tif", channels=1, keep_depth=True)
    assert deep.dtype == np.float32 and np.array_equal(deep[..., 0], values)
    assert full_scale(deep.dtype) == 1.0 and full_scale(np.dtype(np.uint8)) == 255.0


# --------------------------------------------------------------------------------------------- errors


def test_truncated_text_and_missing_files_raise_one_error_naming_the_path(tmp_path):
    Image.fromarray(quadrants(64, 64)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((64, 64, 3), 40000, np.uint16))
    deep = (tmp_path / "deep.png").read_bytes()
    (tmp_path / "cut16.png").write_bytes(deep[: len(deep) // 2])
    for name in ("cut.jpg", "text.png", "cut16.png", "missing.png"):
        with pytest.raises(ImageReadError, match=f"cannot read image .*{name}: ") as caught:
            read_image(tmp_path / name)
        assert caught.value.path == tmp_path / name and caught.value.reason
        assert isinstance(caught.value, ValueError)
        restored = pickle.loads(pickle.dumps(caught.value))  # DataLoader workers pickle errors
        assert str(restored) == str(caught.value)
    with pytest.raises(ImageReadError, match="missing.png: file not found"):
        check_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="text.png"):
        check_image(tmp_path / "text.png")


def test_check_image_reads_the_header_and_decodes_only_when_asked(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.jpg", quality=95)  # mostly pixel data: the cut is in it
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    header = check_image(tmp_path / "cut.jpg")  # the header is intact
    assert (header.width, header.height, header.mode) == (128, 128, "RGB")
    with pytest.raises(ImageReadError, match="cut.jpg"):
        check_image(tmp_path / "cut.jpg", decode=True)
    assert check_image(tmp_path / "ok.jpg", decode=True) == header
