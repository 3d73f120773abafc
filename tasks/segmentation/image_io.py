"""Segmentation's side of file reading: its error class, masks (label maps), and the model-input adapter.

Images are decoded by :mod:`tasks.common.images` (one policy for every task: EXIF orientation, alpha over
white, ...) with ``keep_depth=True``, so 16-bit data keeps its full range for normalisation. Masks are
label maps, not pictures: they are read here exactly as stored, never turned, composited or rescaled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from backbones.errors import UserError
from tasks.common.images import ImageHeader, ImageReadError, check_image, full_scale, read_image


class SegmentationDataError(UserError):
    """Bad segmentation input: the message names the file, key or value and what was expected."""


def _data_error(err: ImageReadError) -> SegmentationDataError:
    """The shared reader's error in this package's style: the file first."""
    return SegmentationDataError(f"{err.path}: cannot read image ({err.reason})")


def image_header(path: str | Path) -> ImageHeader:
    """An input image's header: its displayed size (EXIF orientation applied) without decoding the pixels."""
    try:
        return check_image(path)
    except ImageReadError as err:
        raise _data_error(err) from err


def read_image_and_max(path: str | Path, in_chans: int) -> tuple[np.ndarray, float]:
    """Read a model input as float32 (H, W, in_chans) with its raw values, plus the value of white.

    The file is decoded by :func:`tasks.common.images.read_image` with ``keep_depth=True`` (8-bit values
    0..255, 16-bit 0..65535, floats as stored); the second value (255, 65535 or 1.0) lets ``imagenet``
    normalisation map every depth to the same range. A grayscale image feeds any ``in_chans`` by
    repetition; a colour image needs ``in_chans=3``: turning it into one channel would hide a config
    mistake (a colour dataset given to a 1-channel medical model), so it is an error.

    Raises:
        SegmentationDataError: an unreadable file, or a colour image for a model without 3 channels.
    """
    try:
        array = read_image(path, channels=None, keep_depth=True)
    except ImageReadError as err:
        raise _data_error(err) from err
    channels = array.shape[-1]
    if channels == 1 and in_chans != 1:
        array = np.repeat(array, in_chans, axis=-1)
    elif channels != in_chans:
        raise SegmentationDataError(
            f"{path}: image has {channels} channels, but model.backbone.in_chans={in_chans}"
        )
    return array.astype(np.float32), full_scale(array.dtype)


def _open_mask(path: Path) -> Image.Image:
    if not path.is_file():
        raise SegmentationDataError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except OSError as err:
        raise SegmentationDataError(f"{path}: cannot read image ({err})") from err
    return img


def mask_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a mask as stored, from the file header (masks are never turned by EXIF tags)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except OSError as err:
        raise SegmentationDataError(f"{path}: cannot read image ({err})") from err
    return height, width


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as an integer (H, W) array of raw values (palette masks give their palette indices).

    A mask stored as RGB(A) is accepted only if its colour channels are identical (a grayscale mask saved
    as RGB); colour-coded masks need a value map of grey levels, so they are an error naming the file.
    """
    path = Path(path)
    img = _open_mask(path)
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
