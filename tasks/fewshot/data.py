"""Class-folder image datasets for few-shot work: flat `class/*.png` and nested `group/class/*.png` trees.

torchvision's `ImageFolder` only knows flat trees and silently drops empty classes; few-shot needs the
group level (Omniglot alphabet/character, for same-group episodes) and loud errors on empty or malformed
class folders, so the scan is written here. Images are read by `tasks.common.images` (the policy every task
shares) and resized by torchvision transforms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from .transforms import ImageTransform

from backbones.errors import UserError
from tasks.common.files import is_junk
from tasks.common.images import IMAGE_SUFFIXES, ImageReadError, check_image, is_image_file, read_image


class FewShotDataError(UserError):
    """Bad few-shot input (folders, classes, episodes); the message names the file, class or value."""


@dataclass(frozen=True)
class ClassFolderIndex:
    """The images of a class-folder tree, grouped by class.

    Attributes:
        root: the scanned folder.
        class_names: class ids, sorted; nested trees use "group/class" (e.g. "Greek/character01").
        groups: group of each class ("" for flat trees), same order as `class_names`.
        files: per class, the image paths relative to `root`, sorted.
    """

    root: Path
    class_names: tuple[str, ...]
    groups: tuple[str, ...]
    files: tuple[tuple[str, ...], ...]
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets, total = [], 0
        for class_files in self.files:
            offsets.append(total)
            total += len(class_files)
        object.__setattr__(self, "_offsets", tuple(offsets))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.files)

    def sample_id(self, class_idx: int, image_idx: int) -> int:
        """Global id of image `image_idx` of class `class_idx` (the order of `samples()`)."""
        return self._offsets[class_idx] + image_idx

    def samples(self) -> list[tuple[Path, int]]:
        """All images as (absolute path, class index), class-major; position = global sample id."""
        return [(self.root / f, c) for c, class_files in enumerate(self.files) for f in class_files]

    def relative_paths(self) -> list[str]:
        """Relative path of every sample, indexed by global sample id."""
        return [f for class_files in self.files for f in class_files]

    def subset(self, class_names: Sequence[str]) -> ClassFolderIndex:
        """The index restricted to `class_names` (kept in sorted order); unknown names are an error."""
        position = {name: i for i, name in enumerate(self.class_names)}
        unknown = [n for n in class_names if n not in position]
        if unknown:
            raise FewShotDataError(
                f"classes {unknown[:5]} are not in {self.root} (it has {self.num_classes})"
            )
        keep = sorted(position[n] for n in set(class_names))
        return ClassFolderIndex(
            self.root,
            tuple(self.class_names[i] for i in keep),
            tuple(self.groups[i] for i in keep),
            tuple(self.files[i] for i in keep),
        )


def scan_class_folders(root: str | os.PathLike, min_images: int = 1) -> ClassFolderIndex:
    """Index a class-folder tree; the depth (flat or group/class) is found from where the images are.

    A class is a folder that directly holds images. Every class must sit at the same depth, and no folder
    may hold both images and class sub-folders: either would make the class list ambiguous.

    Args:
        root: the dataset folder.
        min_images: classes with fewer images are an error naming the class folder.

    Raises:
        FewShotDataError: missing root, no classes, mixed depths, images beside sub-folders, or a class
            with fewer than `min_images` images (an empty class folder included).
    """
    root = Path(root)
    if not root.is_dir():
        raise FewShotDataError(f"dataset folder {root} does not exist or is not a folder")
    class_dirs: list[tuple[str, list[str]]] = []
    empty_leaves: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # Junk (`__MACOSX/`, `._*` AppleDouble files, hidden folders) is never a class or an image.
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        images = sorted(f for f in filenames if is_image_file(f) and not is_junk(f))
        rel = Path(dirpath).relative_to(root).as_posix()
        if images and dirnames:
            raise FewShotDataError(
                f"folder {dirpath} holds both images ({images[0]}, ...) and sub-folders "
                f"({dirnames[0]}, ...); "
                "expected either class folders of images or group folders of class folders"
            )
        if images:
            if rel == ".":
                raise FewShotDataError(f"{root} holds images directly; expected one sub-folder per class")
            class_dirs.append((rel, [f"{rel}/{f}" for f in images]))
        elif not dirnames and rel != ".":
            empty_leaves.append(rel)
    if empty_leaves and min_images > 0:
        raise FewShotDataError(
            f"class folder {root / empty_leaves[0]} has no images (extensions {', '.join(IMAGE_SUFFIXES)})"
            + (f"; {len(empty_leaves) - 1} more empty folders" if len(empty_leaves) > 1 else "")
        )
    if not class_dirs:
        raise FewShotDataError(f"no class folders with images under {root}")
    depths = {name.count("/") for name, _ in class_dirs}
    if len(depths) > 1:
        shallow = min(class_dirs, key=lambda c: c[0].count("/"))[0]
        deep = max(class_dirs, key=lambda c: c[0].count("/"))[0]
        raise FewShotDataError(
            f"class folders under {root} are at different depths ({shallow!r} vs {deep!r}); "
            "expected all classes at one level (class/*.png or group/class/*.png)"
        )
    class_dirs.sort(key=lambda c: c[0])
    for name, files in class_dirs:
        if len(files) < min_images:
            raise FewShotDataError(
                f"class {name!r} ({root / name}) has {len(files)} images, need >= {min_images}"
            )
    groups = tuple(name.rsplit("/", 1)[0] if "/" in name else "" for name, _ in class_dirs)
    return ClassFolderIndex(
        root, tuple(n for n, _ in class_dirs), groups, tuple(tuple(f) for _, f in class_dirs)
    )


def check_image_headers(paths: Sequence[str | os.PathLike]) -> None:
    """Open every image header (no decoding: fast) and refuse files that are not readable images up front.

    Mixed sizes, modes and depths are fine: every image is read the same way (`tasks.common.images`).

    Raises:
        FewShotDataError: naming the first unreadable file and why.
    """
    for path in paths:
        try:
            check_image(path)
        except ImageReadError as error:
            raise FewShotDataError(str(error)) from error


class ImageListDataset(Dataset):
    """(image tensor, label) for a list of files, decoded lazily.

    Args:
        paths, labels: the samples.
        transform: an `ImageTransform`.
        channels: 1 or 3 (mode the images are converted to).
        cache: keep each decoded, resized uint8 image in memory after first use (small datasets such as
            Omniglot: decoding dominates the epoch time otherwise); augmentation still runs every time.
    """

    def __init__(self, paths, labels, transform: ImageTransform, channels: int, cache: bool = False):
        if len(paths) != len(labels):
            raise FewShotDataError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = [int(label) for label in labels]
        self.transform = transform
        self.channels = channels
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        resized = self.cache.get(idx) if self.cache is not None else None
        if resized is None:
            resized = self.transform.resize(read_image(self.paths[idx], self.channels))
            if self.cache is not None:
                self.cache[idx] = resized
        return self.transform.finish(resized), self.labels[idx]


class RotatedClasses(Dataset):
    """Every (class, rotation) pair is a new class: label = class * len(rotations) + rotation index.

    Used for base training only (Omniglot practice since Santoro et al. 2016 / Vinyals et al. 2016:
    rotations by multiples of 90 degrees multiply the base classes). `torch.rot90` is exact for square images.
    """

    def __init__(self, dataset: Dataset, rotations: Sequence[int] = (0, 90, 180, 270)):
        bad = [r for r in rotations if r % 90]
        if bad or not rotations:
            raise FewShotDataError(
                f"rotations must be non-empty multiples of 90 degrees, got {list(rotations)}"
            )
        self.dataset = dataset
        self.rotations = tuple(int(r) for r in rotations)

    def __len__(self) -> int:
        return len(self.dataset) * len(self.rotations)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        base_idx, rot_idx = divmod(idx, len(self.rotations))
        image, label = self.dataset[base_idx]
        quarter_turns = self.rotations[rot_idx] // 90
        return torch.rot90(image, quarter_turns, dims=(-2, -1)), label * len(self.rotations) + rot_idx


def dataset_from_index(
    index: ClassFolderIndex, transform: ImageTransform, channels: int, cache: bool = False
) -> ImageListDataset:
    """An `ImageListDataset` over every image of `index`, labels = class positions in `index`."""
    samples = index.samples()
    return ImageListDataset([p for p, _ in samples], [c for _, c in samples], transform, channels, cache)


def load_all(dataset: Dataset, batch_size: int = 256, num_workers: int = 0) -> torch.Tensor:
    """Decode a whole dataset into one tensor (N, C, H, W), in dataset order (evaluation-time cache)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    return torch.cat([images for images, _ in loader]) if len(dataset) else torch.empty(0)


def rotated_index(index: ClassFolderIndex, num_rotations: int) -> tuple[ClassFolderIndex, list[int]]:
    """The class index seen by episodic training on `RotatedClasses(dataset_from_index(index), ...)`.

    Returns:
        (virtual index whose class c * R + r is rotation r of class c, map from its sample ids to the
        positions in the `RotatedClasses` dataset), so that episodes can be drawn over rotated classes.
    """
    names, groups, files, positions = [], [], [], []
    for class_idx, (name, group, class_files) in enumerate(zip(index.class_names, index.groups, index.files)):
        for rot in range(num_rotations):
            names.append(f"{name}@rot{rot}")
            groups.append(group)
            files.append(class_files)
            positions += [
                index.sample_id(class_idx, i) * num_rotations + rot for i in range(len(class_files))
            ]
    return ClassFolderIndex(index.root, tuple(names), tuple(groups), tuple(files)), positions
