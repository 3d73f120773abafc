"""Image/mask pairs (2D folders or NIfTI volumes sliced to 2D), validation, case-grouped splits, datasets.

Everything that can be wrong with the data is checked by :func:`build_records` before training starts, and
each error names the file and what was expected (see tests/segmentation/test_bad_input.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.files import visible_children
from tasks.common.images import IMAGE_SUFFIXES
from tasks.common.kfold import FoldUnits, held_out, unique_units

from .image_io import SegmentationDataError, image_header, mask_size, read_image_and_max, read_mask
from .manifest import DatasetSpec, load_manifest
from .nifti import VolumeCache, take_slice, volume_shape
from .transforms import IGNORE_INDEX, normalize

NIFTI_ENDINGS = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"^(.*)_(\d{4})$")  # nnU-Net: case_0000.nii.gz is channel 0 of "case"


@dataclass(frozen=True)
class Record:
    """One training item: a 2D image, or one slice of a NIfTI volume (``slice_index`` not None)."""

    stem: str
    images: tuple[Path, ...]  # one file per channel for NIfTI (nnU-Net layout); one file for 2D images
    mask: Path
    case_id: str
    slice_index: int | None = None

    @property
    def image_id(self) -> str:
        """The stem, or ``<stem>_z<slice>`` for a NIfTI slice (also used as a file name)."""
        return self.stem if self.slice_index is None else f"{self.stem}_z{self.slice_index:03d}"


# ------------------------------------------------------------------------------------------ dataset spec


def resolve_spec(data_cfg, num_classes: int) -> DatasetSpec:
    """The dataset description: from ``data.manifest`` when set, else from the ``data`` config keys.

    Raises:
        SegmentationDataError: if both define class names or value maps (ambiguous), or the manifest's
            number of labels disagrees with ``model.num_classes``.
    """
    root = Path(data_cfg.root)
    if data_cfg.manifest:
        if data_cfg.class_names or data_cfg.value_map:
            raise SegmentationDataError(
                f"data.class_names/data.value_map are set and data.manifest={data_cfg.manifest!r} defines "
                "them too; keep one source"
            )
        manifest_path = Path(data_cfg.manifest)
        spec = load_manifest(manifest_path if manifest_path.is_absolute() else root / manifest_path)
    else:
        names = list(data_cfg.class_names) or [f"class{i}" for i in range(num_classes)]
        spec = DatasetSpec(
            class_names=names,
            value_map=dict(data_cfg.value_map),
            images_dir=data_cfg.images_dir,
            masks_dir=data_cfg.masks_dir,
            file_ending=data_cfg.file_ending,
            mask_suffix=data_cfg.mask_suffix,
            spacing=list(data_cfg.spacing) or None,
            format=data_cfg.format,
        )
    if spec.num_classes != num_classes:
        raise SegmentationDataError(
            f"the dataset has {spec.num_classes} classes {spec.class_names} but "
            f"model.num_classes={num_classes}"
        )
    bad = {k: v for k, v in spec.lookup().items() if not 0 <= v < num_classes}
    if bad:
        raise SegmentationDataError(f"value_map {bad} points outside the class indices 0..{num_classes - 1}")
    return spec


# ------------------------------------------------------------------------------------------- discovery


def _split_name(path: Path, endings: Sequence[str]) -> str | None:
    name = path.name
    for ending in endings:
        if name.lower().endswith(ending.lower()):
            return name[: -len(ending)]
    return None


def _list_files(folder: Path, endings: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise SegmentationDataError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    # Junk such as macOS `._name.png` resource forks ends like an image but is not one: skipped.
    for path in visible_children(folder):
        stem = _split_name(path, endings) if path.is_file() else None
        if stem is None:
            continue
        if stem in found:
            raise SegmentationDataError(
                f"{folder}: two {what} files with the stem {stem!r}: {found[stem].name} and {path.name}"
            )
        found[stem] = path
    if not found:
        raise SegmentationDataError(f"{folder}: no {what} files ending in {list(endings)}")
    return found


def _names(stems: set[str]) -> str:
    shown = sorted(stems)[:5]
    return ", ".join(shown) + (f" ... ({len(stems)} in all)" if len(stems) > 5 else "")


def _case_id(stem: str, spec: DatasetSpec, case_pattern: str) -> str:
    if stem in spec.case_ids:
        return spec.case_ids[stem]
    if case_pattern:
        match = re.search(case_pattern, stem)
        if match is None or not match.groups():
            raise SegmentationDataError(
                f"data.case_pattern {case_pattern!r} (needs one group) does not match the image stem {stem!r}"
            )
        return match.group(1)
    return stem


def _pair(
    images: dict[str, Path | tuple[Path, ...]],
    masks: dict[str, Path],
    spec: DatasetSpec,
    image_dir: Path,
    mask_dir: Path,
) -> list[tuple[str, Path | tuple[Path, ...], Path]]:
    mask_by_image_stem = {}
    for mask_stem, path in masks.items():
        if spec.mask_suffix and not mask_stem.endswith(spec.mask_suffix):
            raise SegmentationDataError(f"{path}: mask name lacks mask_suffix {spec.mask_suffix!r}")
        mask_by_image_stem[mask_stem[: len(mask_stem) - len(spec.mask_suffix)]] = path
    no_mask = set(images) - set(mask_by_image_stem)
    no_image = set(mask_by_image_stem) - set(images)
    if no_mask:
        raise SegmentationDataError(
            f"{len(no_mask)} image(s) in {image_dir} have no mask in {mask_dir} "
            f"(expected <stem>{spec.mask_suffix}<ending>): {_names(no_mask)}"
        )
    if no_image:
        raise SegmentationDataError(
            f"{len(no_image)} mask(s) in {mask_dir} have no image in {image_dir}: {_names(no_image)}"
        )
    return [(stem, images[stem], mask_by_image_stem[stem]) for stem in sorted(images)]


@dataclass(frozen=True)
class Pair:
    """An image (one file per channel) and its mask, matched by name only: no file has been opened."""

    stem: str
    images: tuple[Path, ...]
    mask: Path
    case_id: str


def discover_pairs(root: str | Path, spec: DatasetSpec, in_chans: int, case_pattern: str = "") -> list[Pair]:
    """Match images and masks by stem (file names only, so a split can be chosen before any file is read).

    Raises:
        SegmentationDataError: missing folders, images without masks, masks without images, duplicate
            stems, wrong number of NIfTI channel files.
    """
    root = Path(root)
    image_dir, mask_dir = root / spec.images_dir, root / spec.masks_dir
    if spec.format == "nifti":
        endings = (spec.file_ending,) if spec.file_ending else NIFTI_ENDINGS
        images = _nifti_channels(image_dir, endings, in_chans)
        masks = _list_files(mask_dir, endings, "mask")
    else:
        endings = (spec.file_ending,) if spec.file_ending else IMAGE_SUFFIXES
        images = {stem: (path,) for stem, path in _list_files(image_dir, endings, "image").items()}
        masks = _list_files(mask_dir, IMAGE_SUFFIXES if not spec.file_ending else endings, "mask")
    return [
        Pair(stem, paths, mask, _case_id(stem, spec, case_pattern))
        for stem, paths, mask in _pair(images, masks, spec, image_dir, mask_dir)
    ]


def _nifti_channels(image_dir: Path, endings: Sequence[str], in_chans: int) -> dict[str, tuple[Path, ...]]:
    """nnU-Net layout: ``case_0000.nii.gz`` is channel 0 of ``case``; every case needs in_chans files."""
    channels: dict[str, dict[int, Path]] = {}
    for stem, path in _list_files(image_dir, endings, "image").items():
        match = _CHANNEL_SUFFIX.match(stem)
        case, channel = (match.group(1), int(match.group(2))) if match else (stem, 0)
        channels.setdefault(case, {})[channel] = path
    images: dict[str, tuple[Path, ...]] = {}
    for case, files in channels.items():
        if sorted(files) != list(range(in_chans)):
            raise SegmentationDataError(
                f"{image_dir}: volume {case!r} has channel files {sorted(files)}, "
                f"expected {list(range(in_chans))} (model.backbone.in_chans={in_chans})"
            )
        images[case] = tuple(files[c] for c in range(in_chans))
    return images


def pairs_to_records(pairs: Sequence[Pair], spec: DatasetSpec, nifti_axis: int = 2) -> list[Record]:
    """Check each pair's sizes from the file headers (no pixels) and expand NIfTI volumes into slices.

    Raises:
        SegmentationDataError: an unreadable header, image/mask size mismatch, a bad slicing axis.
    """
    if spec.format != "nifti":
        return [_image_record(pair) for pair in pairs]
    if nifti_axis not in (0, 1, 2):
        raise SegmentationDataError(f"data.nifti_axis must be 0, 1 or 2, got {nifti_axis}")
    return [record for pair in pairs for record in _volume_records(pair, nifti_axis)]


def _image_record(pair: Pair) -> Record:
    image, mask = pair.images[0], pair.mask
    header, mask_hw = image_header(image), mask_size(mask)
    image_hw = (header.height, header.width)  # as displayed: the orientation the mask was drawn in
    if image_hw != mask_hw:
        turned = ""
        if header.orientation != 1:
            turned = f" as displayed (its EXIF orientation {header.orientation} turns the stored pixels)"
        raise SegmentationDataError(
            f"{image} is {image_hw[0]}x{image_hw[1]} (HxW){turned} but its mask {mask} is "
            f"{mask_hw[0]}x{mask_hw[1]}"
        )
    return Record(pair.stem, pair.images, mask, pair.case_id)


def _volume_records(pair: Pair, axis: int) -> list[Record]:
    mask_shape = volume_shape(pair.mask)
    for path in pair.images:
        if volume_shape(path) != mask_shape:
            raise SegmentationDataError(
                f"{path} has shape {volume_shape(path)} but its mask {pair.mask} has {mask_shape}"
            )
    return [Record(pair.stem, pair.images, pair.mask, pair.case_id, k) for k in range(mask_shape[axis])]


def discover_records(
    root: str | Path, spec: DatasetSpec, in_chans: int, case_pattern: str = "", nifti_axis: int = 2
) -> list[Record]:
    """Match images and masks by stem and expand NIfTI volumes into slices (headers only, no pixels).

    Raises:
        SegmentationDataError: see `discover_pairs` and `pairs_to_records`.
    """
    return pairs_to_records(discover_pairs(root, spec, in_chans, case_pattern), spec, nifti_axis)


# ------------------------------------------------------------------------------------------ mask values


def map_mask(raw: np.ndarray, lookup: dict[int, int], path: Path | str) -> np.ndarray:
    """Raw mask values -> class indices (uint8); any value missing from ``lookup`` is an error naming it."""
    values = np.unique(raw)
    missing = [int(v) for v in values if int(v) not in lookup]
    if missing:
        raise SegmentationDataError(
            f"{path}: mask values {missing[:10]} are not in the class map "
            f"{dict(sorted(lookup.items()))} (set data.value_map or the manifest)"
        )
    out = np.empty(raw.shape, np.uint8)
    for value in values:
        out[raw == value] = lookup[int(value)]
    return out


def validate_mask_values(records: Sequence[Record], spec: DatasetSpec) -> None:
    """Read every mask once and check its values against the class map (before training starts)."""
    lookup = spec.lookup()
    seen: set[Path] = set()
    volumes = VolumeCache(1)
    for record in records:
        if record.mask in seen:
            continue
        seen.add(record.mask)
        raw = volumes.get(record.mask)[0] if record.slice_index is not None else read_mask(record.mask)
        if not np.issubdtype(raw.dtype, np.integer):
            if not np.array_equal(raw, np.round(raw)):
                raise SegmentationDataError(f"{record.mask}: label volume holds non-integer values")
            raw = raw.astype(np.int64)
        map_mask(raw, lookup, record.mask)


# --------------------------------------------------------------------------------------------- splits


def split_cases(case_ids: Iterable[str], val_fraction: float, seed: int) -> set[str]:
    """The seeded choice of held-out cases (the same seed and cases give the same set on every machine).

    Args:
        case_ids: the case of every item (repeats are fine).
        val_fraction: share of *cases* held out (rounded, at least one case when > 0).
        seed: split seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SegmentationDataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    cases = sorted(set(case_ids))
    if val_fraction == 0.0:
        return set()
    if len(cases) < 2:
        raise SegmentationDataError(
            f"cannot hold out a validation split from {len(cases)} case(s); "
            "set data.val_fraction=0 or add cases"
        )
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    return {cases[i] for i in order[:n_val]}


def case_units(case_ids: Iterable[str]) -> FoldUnits:
    """The cases as k-fold units (`tasks.common.kfold`): whole cases go to one fold."""
    return unique_units("case", list(case_ids))


def validation_cases(case_ids: Iterable[str], data) -> set[str]:
    """The held-out cases of the ``data`` config section: fold ``data.fold`` of ``data.num_folds`` (made
    from ``data.split_seed``, or read from ``data.splits_file``) when set, else the ``val_fraction`` split.

    Raises:
        SegmentationDataError, FoldError: bad split settings, or a splits file made for other data.
    """
    case_ids = list(case_ids)
    if data.num_folds:
        return held_out(case_units(case_ids), data.num_folds, data.fold, data.split_seed, data.splits_file)
    return split_cases(case_ids, data.val_fraction, data.split_seed)


def split_by_case(records: Sequence[Record], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of record indices in which all records of one case land on the same side.

    Args:
        records: the records (their ``case_id`` groups them).
        val_fraction: share of *cases* held out (see `split_cases`).
        seed: split seed.

    Returns:
        (train indices, val indices).
    """
    return partition_by_case(records, split_cases((r.case_id for r in records), val_fraction, seed))


def partition_by_case(records: Sequence[Record], val_cases: set[str]) -> tuple[list[int], list[int]]:
    """(train indices, val indices) of `records`: those of `val_cases`, and the others."""
    train = [i for i, r in enumerate(records) if r.case_id not in val_cases]
    val = [i for i, r in enumerate(records) if r.case_id in val_cases]
    return train, val


# --------------------------------------------------------------------------------------------- dataset


class SegmentationDataset(Dataset):
    """Returns ``{"image": float (C, H, W), "mask": long (H, W), "index": int}``.

    Masks hold class indices, with ``IGNORE_INDEX`` (255) on padded pixels.  NIfTI volumes are normalised
    per volume (nnU-Net's convention: the statistics of one slice are noisy), 2D images per image.

    Args:
        records: items (2D images or NIfTI slices).
        spec: dataset description (class map).
        in_chans: model input channels.
        normalization: see :func:`tasks.segmentation.transforms.normalize`.
        ct_window: (center, width) for ``normalization="ct_window"``.
        transform: albumentations transform applied jointly to image and mask (None: no augmentation).
        axis: NIfTI slicing axis.
        cache_volumes: decoded NIfTI volumes kept in memory.
    """

    def __init__(
        self,
        records: Sequence[Record],
        spec: DatasetSpec,
        in_chans: int,
        normalization: str,
        ct_window: Sequence[float] = (40.0, 400.0),
        transform=None,
        axis: int = 2,
        cache_volumes: int = 4,
    ) -> None:
        self.records = list(records)
        self.spec = spec
        self.in_chans = in_chans
        self.normalization = normalization
        self.ct_window = (float(ct_window[0]), float(ct_window[1]))
        self.transform = transform
        self.axis = axis
        self.lookup = spec.lookup()
        self._volumes = VolumeCache(cache_volumes)
        self._normalized: dict[Path, np.ndarray] = {}
        self._cache_volumes = cache_volumes

    def __len__(self) -> int:
        return len(self.records)

    def spacing(self, index: int) -> tuple[float, ...] | None:
        """Pixel size (mm) of item ``index``: the manifest/config spacing, or the volume's in-slice zooms."""
        record = self.records[index]
        if record.slice_index is None:
            return tuple(self.spec.spacing) if self.spec.spacing else None
        zooms = self._volumes.get(record.mask)[1]
        return tuple(z for a, z in enumerate(zooms) if a != self.axis)

    def volume_spacing(self, index: int) -> tuple[float, ...]:
        """Voxel size (mm) of the volume of item ``index`` (NIfTI only)."""
        return self._volumes.get(self.records[index].mask)[1]

    def _normalized_volume(self, path: Path) -> np.ndarray:
        if path not in self._normalized:
            volume = self._volumes.get(path)[0].astype(np.float32)
            if len(self._normalized) >= self._cache_volumes:
                self._normalized.pop(next(iter(self._normalized)))
            self._normalized[path] = normalize(volume[..., None], self.normalization, 1.0, self.ct_window)[
                ..., 0
            ]
        return self._normalized[path]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The normalised image (H, W, C) float32 and class-index mask (H, W) uint8, before augmentation."""
        record = self.records[index]
        if record.slice_index is None:
            image, max_value = read_image_and_max(record.images[0], self.in_chans)
            image = normalize(image, self.normalization, max_value, self.ct_window)
            raw = read_mask(record.mask)
        else:
            image = np.stack(
                [
                    take_slice(self._normalized_volume(p), self.axis, record.slice_index)
                    for p in record.images
                ],
                axis=-1,
            )
            raw = take_slice(self._volumes.get(record.mask)[0], self.axis, record.slice_index)
            raw = np.round(raw).astype(np.int64)
        if image.shape[:2] != raw.shape:
            raise SegmentationDataError(
                f"{record.images[0]}: image {image.shape[:2]} and mask {raw.shape} sizes differ"
            )
        return np.ascontiguousarray(image, dtype=np.float32), map_mask(raw, self.lookup, record.mask)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "index": index,
            "size": torch.tensor(mask.shape[:2]),
        }


def pad_collate(batch: list[dict]) -> dict:
    """Stack samples; samples of different sizes are padded (mask with IGNORE_INDEX) to the largest."""
    height = max(s["image"].shape[-2] for s in batch)
    width = max(s["image"].shape[-1] for s in batch)
    images = torch.zeros(len(batch), batch[0]["image"].shape[0], height, width)
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.long)
    for i, sample in enumerate(batch):
        h, w = sample["mask"].shape
        images[i, :, :h, :w] = sample["image"]
        masks[i, :h, :w] = sample["mask"]
    return {
        "image": images,
        "mask": masks,
        "index": torch.tensor([s["index"] for s in batch]),
        "size": torch.stack([torch.tensor(s["mask"].shape) for s in batch]),
    }
