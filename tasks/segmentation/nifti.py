"""NIfTI volumes (optional, needs nibabel): load, slice to 2D, and write reassembled predictions."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from .image_io import SegmentationDataError


def _nibabel():
    try:
        import nibabel
    except ImportError as err:  # an optional extra: say how to get it
        raise SegmentationDataError(
            "NIfTI data needs nibabel: pip install 'resnet-downstream[medical]'"
        ) from err
    return nibabel


def load_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a 3D NIfTI volume; returns (array, voxel spacing in mm per axis).

    A 4D file with a single channel is squeezed; more channels are an error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SegmentationDataError(f"{path}: file not found")
    nib = _nibabel()
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises several unrelated types for corrupt files
        raise SegmentationDataError(f"{path}: cannot read NIfTI ({err})") from err
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SegmentationDataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, zooms


def volume_shape(path: str | Path) -> tuple[int, ...]:
    """Shape from the header only (no decompression of the data)."""
    nib = _nibabel()
    try:
        shape = nib.load(str(path)).shape
    except Exception as err:
        raise SegmentationDataError(f"{path}: cannot read NIfTI header ({err})") from err
    return tuple(int(s) for s in shape[:3])


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis``."""
    return np.take(volume, index, axis=axis)


def stack_slices(slices: list[np.ndarray], axis: int) -> np.ndarray:
    """Inverse of :func:`take_slice` over all indices: reassembles a volume from its slices."""
    return np.stack(slices, axis=axis)


def save_like(array: np.ndarray, reference: str | Path, path: str | Path) -> None:
    """Write ``array`` as NIfTI with the affine and header of ``reference`` (predicted label volumes)."""
    nib = _nibabel()
    ref = nib.load(str(reference))
    out = nib.Nifti1Image(array.astype(np.uint8), ref.affine, ref.header)
    out.set_data_dtype(np.uint8)
    nib.save(out, str(path))


class VolumeCache:
    """A small LRU cache of decoded volumes: slices of one volume are read together during training."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[str, tuple[np.ndarray, tuple[float, ...]]] = OrderedDict()

    def get(self, path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
        key = str(path)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        item = load_volume(path)
        self._items[key] = item
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return item
