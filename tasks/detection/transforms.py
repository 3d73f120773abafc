"""Joint image/box augmentation with albumentations.

Resizing to the detector's input size is left to torchvision's GeneralizedRCNNTransform (min_size /
max_size), so training and inference see the same resize; these transforms only add variety.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import albumentations as A
import numpy as np


@dataclass
class DetectionAugmentConfig:
    """Training augmentation settings (all off = identity)."""

    hflip: float = 0.5  # probability of a horizontal flip
    scale_jitter: float = 0.0  # zoom in/out by up to this fraction (0.2 -> scale in [0.8, 1.2])
    scale_jitter_prob: float = 0.5
    color_jitter: float = 0.0  # brightness/contrast/saturation strength (0.2 is mild)
    color_jitter_prob: float = 0.5
    min_visibility: float = 0.3  # a box keeping less than this fraction of its area is removed
    min_box_size: float = 1.0  # boxes narrower or shorter than this (pixels) are removed


class DetectionTransform:
    """Callable ``(image HxWx3 uint8, boxes Nx4 xyxy, labels N) -> same`` around an albumentations pipeline.

    Boxes that leave the image or keep less than ``min_visibility`` of their area are removed together
    with their labels, so targets stay valid for the loss.
    """

    def __init__(self, cfg: DetectionAugmentConfig):
        ops = []
        if cfg.hflip > 0:
            ops.append(A.HorizontalFlip(p=cfg.hflip))
        if cfg.scale_jitter > 0:
            s = cfg.scale_jitter
            # Affine keeps the image size: zooming in crops content (and boxes) at the border.
            ops.append(A.Affine(scale=(1.0 - s, 1.0 + s), keep_ratio=True, p=cfg.scale_jitter_prob))
        if cfg.color_jitter > 0:
            c = cfg.color_jitter
            ops.append(
                A.ColorJitter(
                    brightness=c, contrast=c, saturation=c, hue=min(c / 4, 0.5), p=cfg.color_jitter_prob
                )
            )
        self.min_box_size = cfg.min_box_size
        self.pipeline = A.Compose(
            ops,
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=["labels"],
                min_visibility=cfg.min_visibility,
                min_width=cfg.min_box_size,
                min_height=cfg.min_box_size,
                clip=True,
            ),
        )

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
        # albumentations keeps a private RNG that ignores global seeding; drawing its seed from Python's
        # RNG makes augmentation reproducible wherever the caller seeds (DataLoader workers, the engine's
        # per-sample seeding for mid-epoch resume, tests).
        self.pipeline.set_random_seed(random.getrandbits(32))
        out = self.pipeline(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
        new_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        new_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        return out["image"], new_boxes, new_labels
