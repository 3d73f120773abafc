"""Intensity normalisation and joint image/mask augmentation (albumentations)."""

from __future__ import annotations

from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np

from tasks.engine.config import ConfigError

NORMALIZATIONS = ("imagenet", "zscore", "minmax", "ct_window", "none")
IGNORE_INDEX = 255  # mask value of padded pixels: left out of the losses and the metrics
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegmentationAugmentConfig:
    """Section ``data.augment``: joint image/mask augmentation (albumentations), training only."""

    crop_size: list[int] = field(default_factory=lambda: [256, 256])  # [] = whole images (same size needed)
    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.5
    rotate_limit: float = 0.0  # degrees of random rotation (applied with probability rotate_p)
    rotate_p: float = 0.0
    elastic_p: float = 0.0
    elastic_alpha: float = 30.0
    elastic_sigma: float = 6.0
    brightness_contrast_p: float = 0.2
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2


def normalize(
    image: np.ndarray, mode: str, max_value: float = 255.0, ct_window: tuple[float, float] = (40.0, 400.0)
) -> np.ndarray:
    """Normalise an (H, W, C) float image.

    Args:
        image: raw intensities (float32).
        mode: "imagenet" (divide by ``max_value``, then ImageNet mean/std; 1 or N!=3 channels use the mean
            of the three statistics), "zscore" (per image and channel), "minmax" (per image to [0, 1]),
            "ct_window" (clip to [center - width/2, center + width/2] in HU, then to [0, 1]), "none".
        max_value: the pixel type's maximum (255 for 8-bit, 65535 for 16-bit) for "imagenet".
        ct_window: (center, width) for "ct_window".

    Returns:
        float32 array of the same shape.
    """
    if mode not in NORMALIZATIONS:
        raise ConfigError(f"data.normalization must be one of {NORMALIZATIONS}, got {mode!r}")
    image = image.astype(np.float32, copy=False)
    if mode == "none":
        return image
    if mode == "imagenet":
        channels = image.shape[-1]
        mean = np.asarray(IMAGENET_MEAN if channels == 3 else [np.mean(IMAGENET_MEAN)] * channels, np.float32)
        std = np.asarray(IMAGENET_STD if channels == 3 else [np.mean(IMAGENET_STD)] * channels, np.float32)
        return (image / max_value - mean) / std
    if mode == "zscore":
        mean = image.mean(axis=(0, 1), keepdims=True)
        std = image.std(axis=(0, 1), keepdims=True)
        return (image - mean) / np.maximum(std, 1e-8)
    if mode == "minmax":
        low, high = float(image.min()), float(image.max())
        return (image - low) / max(high - low, 1e-8)
    center, width = ct_window
    if width <= 0:
        raise ConfigError(f"data.ct_window width must be > 0, got {width}")
    low, high = center - width / 2, center + width / 2
    return (np.clip(image, low, high) - low) / (high - low)


def build_train_transform(aug: SegmentationAugmentConfig) -> A.Compose:
    """Albumentations pipeline for training from the ``data.augment`` section.

    Images smaller than the crop are padded with 0 and their masks with ``IGNORE_INDEX``, so padding never
    counts as background in the loss.  (The model pads its input to the network stride itself, so crops
    need not be multiples of it; multiples avoid that extra padding.)

    Args:
        aug: the ``data.augment`` config section.
    """
    ops: list[A.BasicTransform] = []
    if aug.crop_size:
        if len(aug.crop_size) != 2 or any(c <= 0 for c in aug.crop_size):
            raise ConfigError(
                f"data.augment.crop_size must be [height, width] with positive values, got {aug.crop_size}"
            )
        height, width = aug.crop_size
        ops += [
            A.PadIfNeeded(height, width, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
            A.RandomCrop(height, width),
        ]
    if aug.hflip:
        ops.append(A.HorizontalFlip(p=aug.hflip))
    if aug.vflip:
        ops.append(A.VerticalFlip(p=aug.vflip))
    if aug.rotate90:
        ops.append(A.RandomRotate90(p=aug.rotate90))
    if aug.rotate_p and aug.rotate_limit:
        ops.append(
            A.Affine(
                rotate=(-aug.rotate_limit, aug.rotate_limit),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
                p=aug.rotate_p,
            )
        )
    if aug.elastic_p:
        ops.append(
            A.ElasticTransform(
                alpha=aug.elastic_alpha,
                sigma=aug.elastic_sigma,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
                p=aug.elastic_p,
            )
        )
    if aug.brightness_contrast_p:
        ops.append(
            A.RandomBrightnessContrast(aug.brightness_limit, aug.contrast_limit, p=aug.brightness_contrast_p)
        )
    return A.Compose(ops)
