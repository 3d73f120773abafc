"""torchvision transform pipelines for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torchvision.transforms import v2

from tasks.engine.config import ConfigError

if TYPE_CHECKING:
    from .config import ClassificationDataConfig

AUGMENTS = ("photo", "cifar", "none")
# torchvision's search-free policies (one random op per image), applied after the crop and flip.
AUTO_AUGMENTS = {"": None, "trivial": v2.TrivialAugmentWide, "rand": v2.RandAugment}


@dataclass
class ClassificationAugmentConfig:
    """Section ``data.augment``: training augmentation, per image (policy) and per batch (timm Mixup)."""

    SCALAR_HINT: ClassVar[str] = "data.augment is a section: write data.augment.policy={value}"

    policy: str = "photo"  # photo (RandomResizedCrop+flip+jitter) | cifar (RandomCrop pad 4 + flip) | none
    color_jitter: float = 0.4  # photo: brightness/contrast/saturation strength
    min_scale: float = 0.08  # photo: RandomResizedCrop lower scale bound
    auto_augment: str = ""  # "" | trivial (TrivialAugmentWide) | rand (RandAugment), after crop and flip
    mixup_alpha: float = 0.0  # timm Mixup; 0 = off
    cutmix_alpha: float = 0.0  # timm CutMix; 0 = off
    mixup_prob: float = 1.0  # probability of mixing a batch when mixup or cutmix is on


def eval_crop_size(cfg: ClassificationDataConfig) -> int:
    """The evaluation center crop: data.eval_crop_size, else the training size."""
    return cfg.eval_crop_size or cfg.image_size


def eval_resize_size(cfg: ClassificationDataConfig) -> int:
    """Resize-before-crop size: the usual 0.875 crop ratio (256 -> 224) unless set explicitly."""
    return cfg.resize_size or int(round(eval_crop_size(cfg) / 0.875))


def _to_tensor(cfg: ClassificationDataConfig) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]


def build_train_transform(cfg: ClassificationDataConfig) -> v2.Compose:
    """photo: RandomResizedCrop + flip + ColorJitter; cifar: RandomCrop(pad 4) + flip; none: eval."""
    aug = cfg.augment
    if aug.policy not in AUGMENTS:
        raise ConfigError(f"data.augment.policy={aug.policy!r}: expected one of {list(AUGMENTS)}")
    if aug.policy == "none":
        return build_eval_transform(cfg)
    if aug.policy == "cifar":
        ops = [v2.RandomCrop(cfg.image_size, padding=4, padding_mode="constant"), v2.RandomHorizontalFlip()]
    else:
        ops = [
            v2.RandomResizedCrop(cfg.image_size, scale=(aug.min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        if aug.color_jitter > 0:
            j = aug.color_jitter
            ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    if AUTO_AUGMENTS[aug.auto_augment] is not None:
        ops.append(AUTO_AUGMENTS[aug.auto_augment]())
    return v2.Compose(ops + _to_tensor(cfg))


def build_eval_transform(cfg: ClassificationDataConfig) -> v2.Compose:
    """Resize the short side then center-crop `eval_crop_size(cfg)` (cifar: resize to it, no margin)."""
    crop = eval_crop_size(cfg)
    if cfg.augment.policy == "cifar":
        ops = [v2.Resize(crop, antialias=True), v2.CenterCrop(crop)]
    else:
        ops = [v2.Resize(eval_resize_size(cfg), antialias=True), v2.CenterCrop(crop)]
    return v2.Compose(ops + _to_tensor(cfg))
