"""torchvision transform pipelines for training and evaluation."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from tasks.engine.config import ConfigError

from .config import ClassificationDataConfig

AUGMENTS = ("photo", "cifar", "none")


def eval_resize_size(cfg: ClassificationDataConfig) -> int:
    """Resize-before-crop size: the usual 0.875 crop ratio (256 -> 224) unless set explicitly."""
    return cfg.resize_size or int(round(cfg.image_size / 0.875))


def _to_tensor(cfg: ClassificationDataConfig) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]


def build_train_transform(cfg: ClassificationDataConfig) -> v2.Compose:
    """photo: RandomResizedCrop + flip + ColorJitter; cifar: RandomCrop(pad 4) + flip; none: eval."""
    if cfg.augment not in AUGMENTS:
        raise ConfigError(f"data.augment={cfg.augment!r}: expected one of {list(AUGMENTS)}")
    if cfg.augment == "none":
        return build_eval_transform(cfg)
    if cfg.augment == "cifar":
        ops = [v2.RandomCrop(cfg.image_size, padding=4, padding_mode="constant"), v2.RandomHorizontalFlip()]
    else:
        ops = [
            v2.RandomResizedCrop(cfg.image_size, scale=(cfg.min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if cfg.color_jitter > 0:
            j = cfg.color_jitter
            ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    return v2.Compose(ops + _to_tensor(cfg))


def build_eval_transform(cfg: ClassificationDataConfig) -> v2.Compose:
    """Resize the short side then center-crop `image_size` (cifar: the image as is, just normalised)."""
    if cfg.augment == "cifar":
        ops = [v2.Resize(cfg.image_size, antialias=True), v2.CenterCrop(cfg.image_size)]
    else:
        ops = [v2.Resize(eval_resize_size(cfg), antialias=True), v2.CenterCrop(cfg.image_size)]
    return v2.Compose(ops + _to_tensor(cfg))
