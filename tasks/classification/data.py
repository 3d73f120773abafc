"""Classification datasets: ImageFolder trees and CSV lists, validated before training starts."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from backbones.errors import UserError
from tasks.common.files import has_junk_part, visible_children
from tasks.common.images import IMAGE_SUFFIXES, ImageReadError, check_image, read_pil
from tasks.common.kfold import FoldUnits, held_out, unique_units

log = logging.getLogger("tasks.classification")

PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("label", "class", "target")


class DataError(UserError):
    """The dataset on disk is malformed; the message names the folder, file or CSV row."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


class ImageListDataset(Dataset):
    """(image, label) pairs from a list of samples; images are read as RGB (tasks.common.images) on access."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], transform: Callable | None = None):
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = read_pil(sample.path)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]


# ------------------------------------------------------------------------------------------ scanning


def folder_classes(root: Path) -> list[str]:
    """Sorted names of the class sub-folders of an ImageFolder root (junk such as `__MACOSX/` skipped)."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes = [p.name for p in visible_children(root) if p.is_dir()]
    if not classes:
        raise DataError(f"{root} has no class sub-folders (expected ROOT/<class>/<image>)")
    return classes


def require_two_folder_classes(root: Path, classes: Sequence[str], key: str = "data.root") -> None:
    """Refuse a tree with a single class folder: it trains a "perfect" one-class model (loss 0, top-1 1.0).

    The usual cause is an archive unpacked as ROOT/<dataset>/<class>/..., with `key` pointing at ROOT.
    """
    if len(classes) >= 2:
        return
    inner = root / classes[0]
    message = (
        f"found 1 class folder {classes[0]!r} under {root}: a classifier needs at least 2 classes. "
        f"Did you point {key} one level too high?"
    )
    if any(p.is_dir() for p in visible_children(inner)):
        message += f" {inner} holds folders itself: try {key}={inner}"
    raise DataError(message)


def _class_files(folder: Path) -> list[Path]:
    """Every file under a class folder, skipping junk (`._*` AppleDouble files, `.DS_Store`, ...)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and not has_junk_part(p, folder)]


def scan_image_folder(
    root: str | Path, classes: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """List the images of an ImageFolder tree (ROOT/<class>/**/<image>).

    Args:
        root: the folder holding one sub-folder per class.
        classes: fixed class list (its order sets the label ids); None = sorted sub-folder names.

    Raises:
        DataError: missing root, an empty class folder, or a folder not in `classes`.
    """
    root = Path(root)
    found = folder_classes(root)
    if classes:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DataError(f"{root}: class folders {extra} are not in data.classes {list(classes)}")
        classes = list(classes)
    else:
        classes = found
    samples = []
    ignored: list[Path] = []
    for label, name in enumerate(classes):
        folder = root / name
        found = _class_files(folder)
        files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
        ignored += [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not files:
            raise DataError(
                f"class folder {folder} has no images (extensions {', '.join(IMAGE_SUFFIXES)}); "
                "remove it or add images"
            )
        samples += [Sample(p, label) for p in files]
    if ignored:
        shown = ", ".join(str(p) for p in ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        log.warning("%s: ignored %d file(s) without an image extension: %s", root, len(ignored), shown)
    return samples, classes


def _pick_column(header: list[str], options: tuple[str, ...], csv_path: Path) -> str:
    lowered = {h.strip().lower(): h for h in header}
    for option in options:
        if option in lowered:
            return lowered[option]
    raise DataError(f"{csv_path}: header {header} needs one of the columns {list(options)}")


def read_csv_list(csv_path: str | Path, base: str | Path = "") -> list[tuple[Path, str, int]]:
    """Read (image path, label name, line number) rows of a CSV with a header `path,label`.

    Relative paths are resolved against `base` (default: the CSV's folder).

    Raises:
        DataError: missing CSV, missing columns, empty label, or a row pointing to a missing file.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"CSV file not found: {csv_path}")
    base_dir = Path(base) if base else csv_path.parent
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark that would otherwise end up in the
    # first header name ("\ufeffpath"); files without one read the same.
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DataError(f"{csv_path}: empty file (expected a header row such as 'path,label')")
        path_col = _pick_column(list(reader.fieldnames), PATH_COLUMNS, csv_path)
        label_col = _pick_column(list(reader.fieldnames), LABEL_COLUMNS, csv_path)
        rows = []
        for line, row in enumerate(reader, start=2):
            raw_path, label = (row.get(path_col) or "").strip(), (row.get(label_col) or "").strip()
            if not raw_path or not label:
                raise DataError(f"{csv_path}:{line}: empty path or label in row {row}")
            path = Path(raw_path) if Path(raw_path).is_absolute() else base_dir / raw_path
            if not path.is_file():
                raise DataError(f"{csv_path}:{line}: image file not found: {path}")
            rows.append((path, label, line))
    if not rows:
        raise DataError(f"{csv_path}: no rows after the header")
    return rows


def csv_samples(csv_path: str | Path, classes: Sequence[str], base: str | Path = "") -> list[Sample]:
    """Samples of a CSV list whose labels must all be in `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for path, label, line in read_csv_list(csv_path, base):
        if label not in index:
            raise DataError(f"{csv_path}:{line}: label {label!r} is not in the class list {list(classes)}")
        samples.append(Sample(path, index[label]))
    return samples


# ------------------------------------------------------------------------------------- split, checks


def stratified_split(
    samples: Sequence[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Seeded per-class split: round(n * val_fraction) images of each class go to validation.

    Every class with at least 2 images keeps at least one image on each side, so small classes are
    never missing from validation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"data.val_fraction={val_fraction}: must be in [0, 1)")
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_class.setdefault(s.label, []).append(i)
    train_idx, val_idx = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        order = [idx[j] for j in torch.randperm(len(idx), generator=generator).tolist()]
        n_val = round(len(idx) * val_fraction)
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_idx += order[:n_val]
        train_idx += order[n_val:]
    return [samples[i] for i in sorted(train_idx)], [samples[i] for i in sorted(val_idx)]


def sample_key(path: Path, base: Path) -> str:
    """A sample's id in splits.json: its path relative to `base` (the data moves, the ids stay), or the
    path itself for a file outside `base`."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def image_units(samples: Sequence[Sample], base: Path) -> FoldUnits:
    """The images as k-fold units stratified by class (an image listed twice is one unit)."""
    return unique_units("image", [sample_key(s.path, base) for s in samples], [s.label for s in samples])


def fold_split(samples: Sequence[Sample], base: Path, data) -> tuple[list[Sample], list[Sample]]:
    """(train, val) for fold ``data.fold`` of ``data.num_folds``: the seeded stratified folds of
    `tasks.common.kfold`, or those of ``data.splits_file``.

    Raises:
        FoldError: bad fold settings, or a splits file made for other images.
    """
    units = image_units(samples, base)
    val_keys = held_out(units, data.num_folds, data.fold, data.split_seed, data.splits_file)
    train = [s for s in samples if sample_key(s.path, base) not in val_keys]
    val = [s for s in samples if sample_key(s.path, base) in val_keys]
    return train, val


def check_images(samples: list[Sample], skip_corrupt: bool, what: str) -> list[Sample]:
    """Decode every image once; fail on the first corrupt file or drop them all with `skip_corrupt`.

    Raises:
        DataError: naming the corrupt file (and how to skip such files).
    """
    good, bad = [], []
    for sample in samples:
        try:
            check_image(sample.path, decode=True)
        except ImageReadError as err:
            if not skip_corrupt:
                raise DataError(f"{err} ({what}); fix or remove it, or set data.skip_corrupt=true") from None
            bad.append(sample.path)
            continue
        good.append(sample)
    if bad:
        shown = ", ".join(str(p) for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
        log.warning("skipped %d corrupt image(s) in %s: %s", len(bad), what, shown)
    if not good:
        raise DataError(f"no readable images left in {what}")
    return good


def require_every_class(samples: Sequence[Sample], classes: Sequence[str], what: str, hint: str = "") -> None:
    """Refuse classes without a single sample: an empty class sits in the head and the macro averages.

    Raises:
        DataError: naming the empty classes (and `hint`, e.g. how they became empty).
    """
    counts = Counter(s.label for s in samples)
    empty = [name for label, name in enumerate(classes) if counts[label] == 0]
    if empty:
        raise DataError(
            f"class(es) {empty} have no images in {what}{hint}: a class without training images cannot "
            "be learnt. Add readable images, or drop the class (its folder, or its name in data.classes)"
        )
