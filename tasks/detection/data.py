"""COCO-format detection dataset producing torchvision-style (image, target) pairs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.images import read_image
from tasks.engine.config import ConfigError


class CategoryMap:
    """Maps COCO category ids (any integers, possibly with gaps) to contiguous labels 1..K and back.

    Label 0 is the background class of torchvision's detectors.

    Args:
        categories: COCO ``categories`` entries (``id`` and ``name``).
        keep_order: labels follow the given order instead of ascending ids (a checkpoint's label order
            adopted for data whose ids are numbered differently).
    """

    def __init__(self, categories: Sequence[dict], keep_order: bool = False):
        ordered = list(categories) if keep_order else sorted(categories, key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in ordered]
        self.names = [str(c["name"]) for c in ordered]
        self._to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}

    @property
    def num_classes(self) -> int:
        """Number of classes including background (what FasterRCNN's ``num_classes`` expects)."""
        return len(self.cat_ids) + 1

    def to_label(self, cat_id: int) -> int:
        """COCO category id -> contiguous label (1-based)."""
        if cat_id not in self._to_label:
            raise ValueError(f"category id {cat_id!r} is not one of {self.cat_ids}")
        return self._to_label[cat_id]

    def to_cat_id(self, label: int) -> int:
        """Contiguous label (1-based) -> COCO category id."""
        if not 1 <= label <= len(self.cat_ids):
            raise ValueError(f"label {label} is outside 1..{len(self.cat_ids)} (0 is background)")
        return self.cat_ids[label - 1]

    def label_name(self, label: int) -> str:
        return self.names[label - 1] if 1 <= label <= len(self.names) else str(label)

    def categories(self) -> list[dict]:
        """``[{"id", "name"}, ...]`` in label order (label 1 first)."""
        return [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.names, strict=True)]

    def describe(self) -> str:
        """The classes in label order for messages, e.g. ``['square' (id 3), 'bar' (id 7)]``."""
        return "[" + ", ".join(f"{n!r} (id {c})" for c, n in zip(self.cat_ids, self.names, strict=True)) + "]"


def split_image_ids(image_ids: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random held-out split of image ids (same seed and ids -> same split on every machine).

    Returns:
        (train ids, val ids), each sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    ids = sorted(image_ids)
    n_val = max(1, round(len(ids) * val_fraction))
    if n_val >= len(ids):
        raise ValueError(f"cannot hold out {n_val} of {len(ids)} images: nothing would be left to train on")
    rng = random.Random(seed)
    shuffled = ids[:]
    rng.shuffle(shuffled)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def subset_coco(data: dict, image_ids: Sequence[int]) -> dict:
    """The COCO dictionary restricted to ``image_ids`` (used as ground truth of a held-out split)."""
    keep = set(image_ids)
    out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in data["images"] if img["id"] in keep]
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return out


class CocoDetection(Dataset):
    """Detection dataset over a *checked* COCO dictionary (see `data_check.load_and_check`).

    Each item is ``(image, target)``: ``image`` a float CxHxW tensor in [0, 1]; ``target`` a dict with
    ``boxes`` (N x 4 float, xyxy pixels), ``labels`` (N int64, contiguous, 1..K), ``image_id`` (int).
    Crowd annotations are left out of the targets (torchvision's losses have no ignore regions; COCOeval
    still sees them in the ground truth).

    Args:
        data: clean COCO dictionary.
        image_root: folder the ``file_name`` entries are relative to.
        category_map: shared label mapping (build it from the full dataset so splits agree).
        transform: callable ``(image HxWx3 uint8, boxes Nx4 xyxy float32, labels N int64)`` ->
            same triple, e.g. `transforms.build_transform`.
        keep_empty: keep images without (non-crowd) boxes as negatives; if False they are skipped.
    """

    def __init__(
        self,
        data: dict,
        image_root: str | Path,
        category_map: CategoryMap,
        transform: Callable | None = None,
        keep_empty: bool = True,
    ):
        self.image_root = Path(image_root)
        self.category_map = category_map
        self.transform = transform
        by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        for ann in data["annotations"]:
            if not ann.get("iscrowd", 0) and ann["image_id"] in by_image:
                by_image[ann["image_id"]].append(ann)
        self.images = [
            img for img in sorted(data["images"], key=lambda i: i["id"]) if keep_empty or by_image[img["id"]]
        ]
        self._anns = by_image

    def __len__(self) -> int:
        return len(self.images)

    def aspect_ratios(self) -> list[float]:
        """Width / height of every item, from the JSON (no decoding); used for batch grouping."""
        return [img["width"] / img["height"] for img in self.images]

    def raw_target(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        anns = self._anns[self.images[index]["id"]]
        boxes = np.array(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in anns
            ],
            dtype=np.float32,
        ).reshape(-1, 4)
        labels = np.array([self.category_map.to_label(a["category_id"]) for a in anns], dtype=np.int64)
        return boxes, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.images[index]
        image = read_image(self.image_root / info["file_name"])  # upright, as its COCO boxes were drawn
        boxes, labels = self.raw_target(index)
        if self.transform is not None:
            image, boxes, labels = self.transform(image, boxes, labels)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": int(info["id"]),
        }
        return tensor, target


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images as a list: torchvision's detectors batch images of different sizes themselves."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
