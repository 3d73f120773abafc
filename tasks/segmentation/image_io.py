"""Reading 2D images and masks (PNG, JPG, TIFF, BMP; 8/16-bit; grayscale, RGB, RGBA) with clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class SegmentationDataError(ValueError):
    """Bad segmentation input: the message names the file, key or value and what was expected."""


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise SegmentationDataError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except OSError as err:
        raise SegmentationDataError(f"{path}: cannot read image ({err})") from err
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except OSError as err:
        raise SegmentationDataError(f"{path}: cannot read image ({err})") from err
    return height, width


def read_image(path: str | Path, in_chans: int) -> np.ndarray:
    """Read an image as float32 (H, W, in_chans), keeping raw intensities (0..255 or 0..65535).

    Handling (documented in README.md):
    * 16-bit images keep their values; normalisation (``minmax``/``zscore``/``ct_window``/``imagenet``,
      which divides by the dtype maximum) maps them to a common range.
    * RGBA: an alpha channel that is fully opaque is dropped; a transparent pixel is an error, because
      what lies "under" it is undefined.
    * Palette images are expanded to RGB.  A grayscale image feeds ``in_chans=3`` by repetition; an RGB
      image given to ``in_chans=1`` is an error (silently averaging colours would hide a config mistake).

    Args:
        path: image file.
        in_chans: number of channels the model expects.

    Returns:
        float32 array (H, W, in_chans); :func:`read_image_and_max` also returns the pixel type's maximum.
    """
    return read_image_and_max(path, in_chans)[0]


def read_image_and_max(path: str | Path, in_chans: int) -> tuple[np.ndarray, float]:
    """:func:`read_image` plus the largest value of the file's pixel type (255, 65535, or 1.0 for floats)."""
    path = Path(path)
    array = _raw_array(path)
    max_value = _type_max(array.dtype)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 4:
        alpha = array[..., 3]
        if alpha.min() != alpha.max():
            raise SegmentationDataError(
                f"{path}: RGBA image with transparent pixels; flatten it onto a background first "
                "(only a fully opaque alpha channel is dropped automatically)"
            )
        array = array[..., :3]
    elif array.shape[-1] == 2:  # grayscale + alpha ("LA")
        array = array[..., :1]
    channels = array.shape[-1]
    if channels == in_chans:
        pass
    elif channels == 1:
        array = np.repeat(array, in_chans, axis=-1)
    else:
        raise SegmentationDataError(f"{path}: image has {channels} channels, but model.in_chans={in_chans}")
    return array.astype(np.float32), max_value


def dtype_max(path: str | Path) -> float:
    """Largest value of the file's pixel type (255 for 8-bit, 65535 for 16-bit); 1.0 for float images."""
    return _type_max(_raw_array(Path(path)).dtype)


def _type_max(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.floating):
        return 1.0
    if dtype == np.uint8:
        return 255.0
    return 65535.0  # 16-bit (and 32-bit integer images, which hold 16-bit data in practice)


def _raw_array(path: Path) -> np.ndarray:
    # OpenCV first: Pillow silently reduces 16-bit RGB PNG/TIFF to 8 bits; OpenCV keeps all 16.
    if path.is_file() and path.suffix.lower() != ".gif":
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is not None:
            if array.ndim == 3 and array.shape[-1] == 3:
                array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
            elif array.ndim == 3 and array.shape[-1] == 4:
                array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
            return array
    img = _open(path)  # Pillow for the rest, and for a readable error message
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "CMYK":
        img = img.convert("RGB")
    array = np.array(img)
    if array.dtype == bool:  # 1-bit images
        array = array.astype(np.uint8) * 255
    return array


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as an integer (H, W) array of raw values (palette masks give their palette indices).

    A mask stored as RGB(A) is accepted only if its colour channels are identical (a grayscale mask saved
    as RGB); colour-coded masks need a value map of grey levels, so they are an error naming the file.
    """
    path = Path(path)
    img = _open(path)
    array = np.array(img)  # mode "P" keeps palette indices: the usual VOC-style class masks
    if array.ndim == 3:
        colour = array[..., :3]
        if not (
            np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])
        ):
            raise SegmentationDataError(
                f"{path}: mask is a colour image; save it as a single-channel (grayscale or palette) image "
                "whose values are class ids"
            )
        array = colour[..., 0]
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise SegmentationDataError(f"{path}: mask must hold integer values, got {array.dtype}")
    return array.astype(np.int64)
