"""Few-shot image transforms: decode-and-resize (cacheable) then augmentation and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torchvision.transforms import v2

from .data import FewShotDataError


@dataclass
class FewShotAugmentConfig:
    """Section ``data.augment``: random jitter of base-training images (all 0 = off, the default).

    Small affine jitter suits strokes and objects alike; flips do not suit characters (Omniglot), so they
    are a separate choice.
    """

    SCALAR_HINT: ClassVar[str] = (
        "data.augment is a section: set data.augment.rotate/translate/scale/hflip "
        "(data.augment=true was rotate=10, translate=0.1, scale=0.1)"
    )

    rotate: float = 0.0  # degrees: a random rotation in [-rotate, rotate]
    translate: float = 0.0  # fraction of the image side, per axis
    scale: float = 0.0  # zoom by a factor in [1 - scale, 1 + scale]
    hflip: float = 0.0  # probability of a horizontal flip
    fill: float = 0.0  # grey level 0-255 of the pixels the jitter uncovers: the background (255 for Omniglot)

    def ops(self) -> list:
        """The torchvision v2 ops these settings ask for ([] when all are off)."""
        ops: list = []
        if self.rotate or self.translate or self.scale:
            ops.append(
                v2.RandomAffine(
                    degrees=self.rotate,
                    translate=(self.translate, self.translate) if self.translate else None,
                    scale=(1 - self.scale, 1 + self.scale) if self.scale else None,
                    # The default black fill draws a dark band along the uncovered edges, which on
                    # dark-on-white drawings looks like a stroke that is not there.
                    fill=self.fill,
                )
            )
        if self.hflip:
            ops.append(v2.RandomHorizontalFlip(self.hflip))
        return ops


class ImageTransform:
    """(H, W, channels) uint8 image -> float tensor (channels, size, size) in [-1, 1] (mean 0.5, std 0.5).

    Two stages so that datasets can cache the deterministic part (decode, convert, resize) and redo only
    the random augmentation per sample.

    Args:
        image_size: square output side; every image is resized (not cropped), so mixed sizes are fine.
        channels: 1 (grayscale, e.g. Omniglot) or 3 (RGB).
        augment: random jitter for base training; None = none (evaluation, fixed tasks).
    """

    def __init__(self, image_size: int, channels: int, augment: FewShotAugmentConfig | None = None):
        if channels not in (1, 3):
            raise FewShotDataError(f"channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise FewShotDataError(f"image_size must be >= 1, got {image_size}")
        self.resize = v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)])
        finish = augment.ops() if augment is not None else []
        finish += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
        self.finish = v2.Compose(finish)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.finish(self.resize(image))


def build_transform(
    image_size: int, channels: int, augment: FewShotAugmentConfig | None = None
) -> ImageTransform:
    """See `ImageTransform`."""
    return ImageTransform(image_size, channels, augment)
