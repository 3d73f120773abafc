"""A small dataset manifest in the spirit of nnU-Net's ``dataset.json``.

Example (2D folder pairs)::

    {
      "name": "membrane",
      "channel_names": {"0": "EM"},
      "labels": {"membrane": 0, "cell_interior": 1},
      "value_map": {"0": 0, "255": 1},
      "file_ending": ".png",
      "images_dir": "image",
      "masks_dir": "label",
      "case_ids": {"0": "stack_a", "1": "stack_a"},
      "spacing": [0.004, 0.004]
    }

``labels`` maps class names to class indices 0..C-1 (as nnU-Net).  ``value_map`` (optional; default: the
mask values are the class indices) maps raw mask values to class indices, e.g. 0/255 for binary masks.
``case_ids`` (optional) maps an image stem to its case/patient id: splits never separate one case's images
and per-case metrics pool them.  ``spacing`` (optional) is the pixel size (row, col) in mm for HD95.
``format`` is ``"folder"`` (default) or ``"nifti"`` (``file_ending`` ".nii.gz"; spacing then comes from
each volume header).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .image_io import SegmentationDataError

MANIFEST_KEYS = (
    "name",
    "description",
    "channel_names",
    "labels",
    "value_map",
    "file_ending",
    "images_dir",
    "masks_dir",
    "case_ids",
    "spacing",
    "format",
    "mask_suffix",
    "numTraining",
)
FORMATS = ("folder", "nifti")


@dataclass
class DatasetSpec:
    """Everything the data pipeline needs to know about a dataset (from a manifest or from the config)."""

    class_names: list[str]
    value_map: dict[int, int]  # raw mask value -> class index; empty = identity on 0..C-1
    images_dir: str = "images"
    masks_dir: str = "masks"
    file_ending: str = ""  # "" = any of the supported image suffixes
    mask_suffix: str = ""  # mask stem = image stem + mask_suffix (e.g. "_mask")
    case_ids: dict[str, str] = field(default_factory=dict)
    spacing: list[float] | None = None
    format: str = "folder"
    channel_names: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lookup(self) -> dict[int, int]:
        """The raw value -> class map actually applied (identity when no value_map was given)."""
        return dict(self.value_map) if self.value_map else {c: c for c in range(self.num_classes)}


def _int_key(path: Path, key: str, raw: object) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise SegmentationDataError(f"{path}: {key} key {raw!r} is not an integer") from None


def load_manifest(path: str | Path) -> DatasetSpec:
    """Read and validate a dataset.json-style manifest.

    Args:
        path: the JSON file.

    Returns:
        A :class:`DatasetSpec`.

    Raises:
        SegmentationDataError: unknown keys, labels that are not 0..C-1, value_map pointing outside the
            labels, malformed JSON; the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise SegmentationDataError(f"manifest not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SegmentationDataError(f"{path}: invalid JSON ({err})") from err
    if not isinstance(data, dict):
        raise SegmentationDataError(f"{path}: top level must be an object")
    unknown = sorted(set(data) - set(MANIFEST_KEYS))
    if unknown:
        raise SegmentationDataError(f"{path}: unknown keys {unknown}; valid keys: {list(MANIFEST_KEYS)}")
    labels = data.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise SegmentationDataError(
            f'{path}: \'labels\' must map class names to indices, e.g. {{"background": 0, "tumour": 1}}'
        )
    by_index = {}
    for name, index in labels.items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise SegmentationDataError(
                f"{path}: labels[{name!r}] must be an integer class index, got {index!r}"
            )
        by_index[index] = name
    if sorted(by_index) != list(range(len(labels))):
        raise SegmentationDataError(
            f"{path}: label indices must be 0..{len(labels) - 1} without gaps, got {sorted(by_index)}"
        )
    value_map = {_int_key(path, "value_map", k): v for k, v in (data.get("value_map") or {}).items()}
    bad = {k: v for k, v in value_map.items() if v not in by_index}
    if bad:
        raise SegmentationDataError(
            f"{path}: value_map sends {bad} to class indices not in labels {sorted(by_index)}"
        )
    fmt = data.get("format", "folder")
    if fmt not in FORMATS:
        raise SegmentationDataError(f"{path}: format must be one of {FORMATS}, got {fmt!r}")
    spacing = data.get("spacing")
    if spacing is not None and (
        not isinstance(spacing, list)
        or len(spacing) != 2
        or not all(isinstance(s, (int, float)) and s > 0 for s in spacing)
    ):
        raise SegmentationDataError(
            f"{path}: spacing must be [row_mm, col_mm] with positive values, got {spacing!r}"
        )
    channel_names = data.get("channel_names") or {}
    return DatasetSpec(
        class_names=[by_index[i] for i in range(len(by_index))],
        value_map=value_map,
        images_dir=data.get("images_dir", "imagesTr" if fmt == "nifti" else "images"),
        masks_dir=data.get("masks_dir", "labelsTr" if fmt == "nifti" else "masks"),
        file_ending=data.get("file_ending", ".nii.gz" if fmt == "nifti" else ""),
        mask_suffix=data.get("mask_suffix", ""),
        case_ids={str(k): str(v) for k, v in (data.get("case_ids") or {}).items()},
        spacing=[float(s) for s in spacing] if spacing else None,
        format=fmt,
        channel_names=[channel_names[k] for k in sorted(channel_names, key=int)],
    )


def write_manifest(spec: DatasetSpec, path: str | Path) -> None:
    """Write ``spec`` as a manifest (round-trips with :func:`load_manifest`)."""
    data = {
        "channel_names": {str(i): n for i, n in enumerate(spec.channel_names)},
        "labels": {name: i for i, name in enumerate(spec.class_names)},
        "value_map": {str(k): v for k, v in spec.value_map.items()},
        "file_ending": spec.file_ending,
        "images_dir": spec.images_dir,
        "masks_dir": spec.masks_dir,
        "case_ids": spec.case_ids,
        "format": spec.format,
        "mask_suffix": spec.mask_suffix,
    }
    if spec.spacing:
        data["spacing"] = spec.spacing
    Path(path).write_text(json.dumps(data, indent=2))
