"""Typed config of the classification task (sections `model:` and `data:` next to `train:`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tasks.common.backbone import MOVED_BACKBONE_KEYS, BackboneConfig
from tasks.engine.config import RunConfig

from .transforms import ClassificationAugmentConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Keys that were flat under data: before augmentation became the data.augment section.
AUGMENT_KEYS = ("color_jitter", "min_scale", "mixup_alpha", "cutmix_alpha", "mixup_prob")


@dataclass
class ClassificationModelConfig:
    """Backbone + pooling + dropout + linear (or cosine) head."""

    MOVED_KEYS: ClassVar[dict[str, str]] = MOVED_BACKBONE_KEYS

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 0  # 0 = number of classes found in the data
    pool: str = "avg"  # avg | max | avgmax | catavgmax (timm SelectAdaptivePool2d)
    dropout: float = 0.0  # before the classifier
    head: str = "linear"  # linear | cosine
    cosine_scale: float = 16.0  # logit scale of the cosine head
    label_smoothing: float = 0.0


@dataclass
class ClassificationDataConfig:
    """Where the images are and how they are augmented."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "val_ratio": "data.val_fraction",
        **{key: f"data.augment.{key}" for key in AUGMENT_KEYS},
    }

    format: str = "imagefolder"  # imagefolder | csv
    root: str = ""  # imagefolder: class folders (or train/ and val/ inside); csv: base of relative paths
    train_dir: str = ""  # imagefolder: explicit train folder (default: root/train if present, else root)
    val_dir: str = ""  # imagefolder: explicit val folder (default: root/val if present, else a split)
    train_csv: str = ""  # csv: columns path,label
    val_csv: str = ""
    classes: list[str] = field(default_factory=list)  # fixed class list/order; [] = sorted names found
    val_fraction: float = 0.2  # seeded stratified split when no val set is given; 0 = no validation
    split_seed: int = 0
    # k-fold cross-validation (tools/train_cv.py): 0 = off (the val_fraction split); else k >= 2 folds
    num_folds: int = 0
    fold: int = 0  # with num_folds: the fold validated on, 0..num_folds-1 (by image, stratified by class)
    splits_file: str = ""  # with num_folds: the splits.json of the folds ("" = made from split_seed)
    image_size: int = 224
    resize_size: int = 0  # eval resize before the center crop; 0 = eval_crop_size / 0.875
    # eval and predict center crop; 0 = image_size. Larger than image_size makes up for RandomResizedCrop
    # showing objects larger in training than the center crop does (FixRes, Touvron et al. 2019)
    eval_crop_size: int = 0
    augment: ClassificationAugmentConfig = field(default_factory=ClassificationAugmentConfig)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    check_images: bool = True  # decode every image before training (finds corrupt files early)
    skip_corrupt: bool = False  # drop corrupt images (with a count in the log) instead of failing


@dataclass
class ClassificationEvalConfig:
    """Validation / prediction settings."""

    # test-time augmentation, softmax probabilities averaged: [] = off; any of hflip, vflip, rotate90
    tta: list[str] = field(default_factory=list)


@dataclass
class ClassificationConfig(RunConfig):
    """Full classification run config."""

    model: ClassificationModelConfig = field(default_factory=ClassificationModelConfig)
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    eval: ClassificationEvalConfig = field(default_factory=ClassificationEvalConfig)
    output_dir: str = "runs/classification"
