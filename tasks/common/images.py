"""Image reading for every task: one decoder and one policy, so a file gives the same pixels everywhere.

Every dataset, predict tool and the few-shot fixed-task mode read images through :func:`read_image` (or
:func:`read_pil`, its PIL form); checks before training use :func:`check_image`. The policy, in the
order it is applied:

1. **Orientation.** The EXIF orientation is applied first (as ``PIL.ImageOps.exif_transpose``), so the
   pixels, COCO boxes and masks agree with what the annotator saw: viewers and annotation tools show a
   phone photo upright, while its stored pixels lie on their side. Sizes from :func:`check_image` are
   the displayed ones too. (A PNG's orientation is read from the chunks before its pixel data, where
   writers put it; finding one placed after the pixels would mean decoding the image.)
2. **Transparency** (RGBA, LA, palette or gray/RGB images with a transparent colour) is composited over
   white; a fully opaque alpha channel is simply dropped.
3. **Modes.** Palette, CMYK, YCbCr, LAB, HSV and 1-bit images become RGB or gray through PIL's own
   conversions. ``channels=1`` turns colour into gray with PIL's ITU-R 601-2 luma weights,
   ``channels=3`` repeats a gray channel; ``channels=None`` keeps what the file holds (1 or 3).
4. **Depth.** 16-bit data (``I;16``, ``I``, 16-bit RGB/RGBA PNG and TIFF) is scaled to 8 bits by
   ``value * 255 / 65535``, rounded: one fixed scale, so a value maps to the same 8-bit value in every
   image of a dataset (scaling by each image's own maximum would not). Floating-point images are taken
   as 0..1. ``keep_depth=True`` keeps the file's own values instead (uint8, uint16, int32 or float32),
   for data whose range matters, such as medical images; :func:`full_scale` gives the value white has.
5. **Errors.** A missing, unreadable, truncated or non-image file raises :class:`ImageReadError`, naming
   the file and the reason.

Label maps (segmentation masks) are not images: they are read by their task, never composited, rotated
or rescaled.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from backbones.errors import UserError

from .files import visible_children

# torchvision's IMG_EXTENSIONS plus .gif (PIL decodes the first frame; real photo sets hold a few).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# EXIF orientation -> the same array operation as the transposition PIL.ImageOps.exif_transpose applies.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_SWAPS_AXES = (5, 6, 7, 8)

# What PIL raises on broken files: truncated streams and bad headers (OSError), damaged chunks in some
# plugins (SyntaxError, ValueError, EOFError), and images past PIL's decompression-bomb pixel limit.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageReadError(UserError):
    """An image file that cannot be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self):
        # DataLoader workers pickle exceptions: rebuild from the two arguments, not the message.
        return type(self), (self.path, self.reason)


class ImageFolderError(UserError):
    """A folder given as a set of images that is missing or holds none."""


@dataclass(frozen=True)
class ImageHeader:
    """What :func:`check_image` reads from a file's header: the displayed size, orientation and PIL mode."""

    width: int
    height: int
    orientation: int
    mode: str

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as stored, before the EXIF orientation turns them."""
        if self.orientation in _SWAPS_AXES:
            return self.height, self.width
        return self.width, self.height


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` ends in one of `IMAGE_SUFFIXES` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name: what every predict tool reads.

    Raises:
        ImageFolderError: the folder does not exist or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"image folder {str(folder)!r} does not exist")
    # visible_children skips macOS `._name.jpg` resource forks and other junk that looks like an image.
    files = [p for p in visible_children(folder) if is_image_file(p) and p.is_file()]
    if not files:
        raise ImageFolderError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    return files


def full_scale(dtype: np.dtype) -> float:
    """The value of white at a depth: 255 (8-bit), 65535 (16-bit and 32-bit integer data), 1.0 (floats).

    32-bit integer files (PIL mode ``I``) hold 16-bit data in practice, so they share the 16-bit scale.
    """
    if np.issubdtype(dtype, np.floating):
        return 1.0
    return 255.0 if dtype == np.uint8 else 65535.0


def check_image(path: str | os.PathLike, decode: bool = False) -> ImageHeader:
    """Read an image's header (cheap: no pixels); with ``decode=True`` also decode it as `read_image` does.

    Raises:
        ImageReadError: the file is missing, not an image, or (with ``decode``) truncated or damaged.
    """
    with _named_errors(path), Image.open(path) as img:
        orientation = _orientation(img)
        width, height = img.size
        if orientation in _SWAPS_AXES:
            width, height = height, width
        header = ImageHeader(width, height, orientation, img.mode)
        if decode:
            _decode(img, path)
    return header


def read_image(path: str | os.PathLike, channels: int | None = 3, keep_depth: bool = False) -> np.ndarray:
    """Decode an image into an (H, W, C) array following the module's policy (see the module docstring).

    Args:
        path: image file.
        channels: 3 (RGB), 1 (gray) or None (what the file holds: 1 for gray images, 3 for colour ones).
        keep_depth: keep the file's values and dtype (uint8, uint16, int32 or float32) instead of 8 bits.

    Returns:
        A writable, C-contiguous array: uint8 unless ``keep_depth``.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or damaged.
    """
    return np.require(_read(path, channels, keep_depth), requirements=("C", "W"))


def read_pil(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """`read_image` as an 8-bit PIL image, for pipelines of PIL transforms.

    Args:
        path: image file.
        mode: "RGB" or "L".
    """
    channels = {"RGB": 3, "L": 1}.get(mode)
    if channels is None:
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    array = np.ascontiguousarray(_read(path, channels, keep_depth=False))  # PIL copies it: no writable copy
    return Image.fromarray(array[..., 0] if channels == 1 else array)


# ------------------------------------------------------------------------------------------ decoding


def _read(path: str | os.PathLike, channels: int | None, keep_depth: bool) -> np.ndarray:
    """`read_image` without the final copy that makes the array writable (PIL's arrays are read-only)."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    with _named_errors(path), Image.open(path) as img:
        array = _decode(img, path)
    array = _composite_on_white(array)
    if channels is not None:
        array = _to_channels(array, channels)
    return array if keep_depth else _to_uint8(array)


@contextmanager
def _named_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn PIL's and the OS's many exception types into one `ImageReadError` naming the file."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except _DECODE_ERRORS as err:
        raise ImageReadError(path, str(err) or type(err).__name__) from err


def _orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation 1..8 of an opened, not yet decoded image; 1 when there is none."""
    if img.format == "PNG" and "exif" not in img.info and "XML:com.adobe.xmp" not in img.info:
        return 1  # PIL would decode the whole image to look for an eXIf chunk after the pixel data
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (struct.error, KeyError, TypeError, *_DECODE_ERRORS):
        return 1  # a damaged EXIF block leaves the pixels readable: take them as stored
    return orientation if orientation in _ORIENT else 1


def _decode(img: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """The pixels, upright, as (H, W, C), C = 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA, at the file's depth."""
    orientation = _orientation(img)
    if _pil_cuts_depth(img):
        return _ORIENT.get(orientation, np.asarray)(_decode_deep_colour(img, path))
    img.load()  # decode now: a truncated file fails here, naming the file, not later in a transform
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    return _pil_to_array(img)


def _pil_cuts_depth(img: Image.Image) -> bool:
    """Whether PIL would decode this file's 16-bit colour samples to 8 bits (it keeps 16-bit gray whole)."""
    if img.mode not in ("RGB", "RGBA") or not img.tile:
        return False
    args = img.tile[0][3]  # the decoder's raw mode, e.g. "RGB;16B" for a 16-bit RGB PNG
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    return isinstance(rawmode, str) and ";16" in rawmode


def _decode_deep_colour(img: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """Decode a 16-bit RGB(A) PNG or TIFF with OpenCV, which keeps all 16 bits (PIL keeps the top 8)."""
    import cv2  # only these files need it; most runs never import OpenCV for reading

    array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # as stored: no EXIF turn
    if array is None or array.ndim != 3 or array.shape[-1] not in (3, 4):
        img.load()  # PIL's error names what is wrong (a truncated stream, ...)
        raise ImageReadError(path, "OpenCV cannot decode its 16-bit colour data")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[-1] == 3 else cv2.COLOR_BGRA2RGBA)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """A decoded PIL image as (H, W, C) at its depth: uint8 (L, LA, RGB, RGBA), uint16, int32, float32."""
    mode = img.mode
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    elif mode in ("L", "RGB") and "transparency" in img.info:  # a colour key (PNG tRNS)
        img = img.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("1", "La", "RGBa"):
        img = img.convert({"1": "L", "La": "LA", "RGBa": "RGBA"}[mode])
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        img = img.convert("RGB")  # CMYK (PIL un-inverts Adobe CMYK JPEGs), YCbCr, LAB, HSV, RGBX
    array = np.asarray(img)
    if array.dtype.byteorder == ">":  # I;16B
        array = array.astype(array.dtype.newbyteorder("="))
    return array[..., None] if array.ndim == 2 else array


# ---------------------------------------------------------------------------------------- conversions


def _composite_on_white(array: np.ndarray) -> np.ndarray:
    """Drop the alpha channel of gray+alpha / RGBA arrays, blending the colour over white.

    White, because it is what browsers, documents and the annotation tools built on them show under
    transparency: the model sees the picture the labeller saw. (Keeping the colour stored under alpha 0
    shows arbitrary pixels; black would turn dark objects on a cut-out background into holes.)
    """
    if array.shape[-1] not in (2, 4):
        return array
    colour, alpha = array[..., :-1], array[..., -1:]
    top = int(full_scale(array.dtype))
    if (alpha == top).all():
        return colour
    # Exact integer blend, rounded; the largest term, top * top + top // 2, fits these types.
    work = np.uint16 if top == 255 else np.uint32
    a = alpha.astype(work)
    blended = (colour.astype(work) * a + top * (top - a) + top // 2) // top
    return blended.astype(array.dtype)


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Gray -> RGB by repetition; RGB -> gray by PIL's luma weights (299/587/114, in 16-bit fixed point)."""
    if array.shape[-1] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    if np.issubdtype(array.dtype, np.integer):
        rgb = array.astype(np.uint32)  # 65535 * 65536 + 32768 still fits
        gray = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 32768) >> 16
    else:
        gray = array @ np.array([19595, 38470, 7471], np.float64) / 65536
    return gray[..., None].astype(array.dtype)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """8-bit values: 16-bit data by value * 255 / 65535 rounded, floats as 0..1 (clipped), 8-bit as is."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        unit = np.clip(np.nan_to_num(array, nan=0.0), 0.0, 1.0)
        return np.floor(unit * 255.0 + 0.5).astype(np.uint8)
    values = np.clip(array, 0, 65535).astype(np.uint32)
    return ((values + 128) // 257).astype(np.uint8)  # round(v / 257) == round(v * 255 / 65535), no ties
