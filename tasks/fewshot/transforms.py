"""Few-shot image transforms: decode-and-resize (cacheable) then augmentation and normalisation."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from .data import FewShotDataError


class ImageTransform:
    """(H, W, channels) uint8 image -> float tensor (channels, size, size) in [-1, 1] (mean 0.5, std 0.5).

    Two stages so that datasets can cache the deterministic part (decode, convert, resize) and redo only
    the random augmentation per sample.

    Args:
        image_size: square output side; every image is resized (not cropped), so mixed sizes are fine.
        channels: 1 (grayscale, e.g. Omniglot) or 3 (RGB).
        augment: small random affine jitter for base training (strokes and objects survive it).
    """

    def __init__(self, image_size: int, channels: int, augment: bool = False):
        if channels not in (1, 3):
            raise FewShotDataError(f"channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise FewShotDataError(f"image_size must be >= 1, got {image_size}")
        self.resize = v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)])
        finish: list = (
            [v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))] if augment else []
        )
        finish += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
        self.finish = v2.Compose(finish)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.finish(self.resize(image))


def build_transform(image_size: int, channels: int, augment: bool = False) -> ImageTransform:
    """See `ImageTransform`."""
    return ImageTransform(image_size, channels, augment)
