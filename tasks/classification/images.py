"""Image decoding with correct conversion of every PIL mode to 8-bit RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# torchvision's IMG_EXTENSIONS plus .gif (PIL decodes its first frame; real photo sets contain a few).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class CorruptImageError(ValueError):
    """An image file cannot be decoded; the message names the file."""


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    `Image.convert("RGB")` is wrong for two common cases, which are handled here:
    16/32-bit integer images ("I;16", "I") are clipped to 255 instead of rescaled, and transparent
    images (RGBA, LA, palette with transparency) keep whatever colour hides under alpha=0, so they are
    composited on `background` instead (white, as a browser shows them).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            top = 1.0 if arr.size and arr.max() <= 1.0 else 255.0
        else:
            top = 65535.0 if mode.startswith("I;16") or (arr.size and arr.max() > 255) else 255.0
        gray = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV: PIL's own conversions are correct (CMYK JPEGs are un-inverted on decode).
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open, fully decode and convert an image to RGB.

    Raises:
        CorruptImageError: naming the file when it is truncated, not an image, or unreadable.
    """
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later inside a worker
            return to_rgb(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot decode image {path}: {err}") from err
