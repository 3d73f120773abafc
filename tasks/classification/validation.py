"""Checks of the classification config values, run when the Task is built (before any data or model work).

Without them a bad value surfaces late and far from its key: `data.mean=[0.5, 0.5]` crashes inside
Normalize at the first batch (after the run folder exists), `data.augment.min_scale=2` inside
RandomResizedCrop, and `data.std=[0, 0, 0]` trains on infinities. Every message names the dotted key,
the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tasks.common.backbone import validate_backbone
from tasks.common.tta import check_tta
from tasks.engine.checks import check_one_of, check_range, invalid

from .config import ClassificationConfig, ClassificationDataConfig, ClassificationModelConfig
from .model import HEADS, POOLS
from .transforms import AUGMENTS, AUTO_AUGMENTS, ClassificationAugmentConfig, eval_crop_size

FORMATS = ("imagefolder", "csv")
# Every image is decoded to RGB (tasks.common.images.read_pil), so the network always sees 3 channels.
INPUT_CHANNELS = 3


def check_channel_list(key: str, values: Sequence[float], positive: bool) -> None:
    """Per-channel normalisation values: one finite number per input channel (> 0 for std)."""
    if len(values) != INPUT_CHANNELS:
        raise invalid(
            key, values, f"needs {INPUT_CHANNELS} values, one per input channel (images are read as RGB)"
        )
    if not all(math.isfinite(v) for v in values):
        raise invalid(key, values, "every value must be a finite number")
    if positive and not all(v > 0 for v in values):
        raise invalid(key, values, "every value must be > 0")


def check_class_list(classes: Sequence[str]) -> None:
    """data.classes: empty (use the data's classes) or >= 2 distinct, non-empty names."""
    if not classes:
        return
    if len(classes) < 2:
        raise invalid(
            "data.classes", list(classes), "a classifier needs at least 2 classes ([] = the data's)"
        )
    if any(not str(name).strip() for name in classes):
        raise invalid("data.classes", list(classes), "class names must not be empty")
    duplicates = sorted({name for name in classes if list(classes).count(name) > 1})
    if duplicates:
        raise invalid("data.classes", list(classes), f"duplicate names {duplicates}")


def validate_data(data: ClassificationDataConfig, batch_size: int) -> None:
    """Check every `data.*` value whose bad value would crash later or silently misbehave."""
    check_one_of("data.format", data.format, FORMATS)
    if data.format == "csv" and not data.train_csv:
        raise invalid(
            "data.train_csv", data.train_csv, "data.format=csv needs a CSV file (columns path,label)"
        )
    check_class_list(data.classes)
    check_range("data.val_fraction", data.val_fraction, 0.0, 1.0, high_open=True)
    if data.image_size < 1:
        raise invalid("data.image_size", data.image_size, "must be a positive number of pixels")
    if data.eval_crop_size < 0:
        raise invalid("data.eval_crop_size", data.eval_crop_size, "must be >= 0 (0 = data.image_size)")
    if data.resize_size < 0:
        raise invalid("data.resize_size", data.resize_size, "must be >= 0 (0 = eval crop / 0.875)")
    crop = eval_crop_size(data)
    if data.augment.policy != "cifar" and 0 < data.resize_size < crop:
        # CenterCrop pads an image smaller than the crop with black borders instead of failing.
        raise invalid(
            "data.resize_size",
            data.resize_size,
            f"must be 0 or >= the eval crop, {crop} (the center crop would pad the image)",
        )
    check_channel_list("data.mean", data.mean, positive=False)
    check_channel_list("data.std", data.std, positive=True)
    check_augment(data.augment, batch_size)


def check_augment(aug: ClassificationAugmentConfig, batch_size: int) -> None:
    """The ``data.augment`` section."""
    check_one_of("data.augment.policy", aug.policy, AUGMENTS)
    check_one_of("data.augment.auto_augment", aug.auto_augment, list(AUTO_AUGMENTS))
    check_range("data.augment.min_scale", aug.min_scale, 0.0, 1.0, low_open=True)
    check_range("data.augment.color_jitter", aug.color_jitter, 0.0, what="0 = no jitter")
    for key in ("mixup_alpha", "cutmix_alpha"):
        check_range(f"data.augment.{key}", getattr(aug, key), 0.0, what="0 = off")
    check_range("data.augment.mixup_prob", aug.mixup_prob, 0.0, 1.0)
    if (aug.mixup_alpha > 0 or aug.cutmix_alpha > 0) and batch_size % 2:
        # timm's Mixup mixes each sample with its mirror in the batch: an odd batch cannot be paired.
        raise invalid("train.batch_size", batch_size, "mixup/cutmix need an even batch size")


def validate_model(model: ClassificationModelConfig) -> None:
    """Check every `model.*` value before the network is built (or the data is read)."""
    validate_backbone(model.backbone)
    if model.backbone.in_chans != INPUT_CHANNELS:
        raise invalid("model.backbone.in_chans", model.backbone.in_chans, "must be 3: images are read as RGB")
    check_one_of("model.pool", model.pool, POOLS)
    check_one_of("model.head", model.head, HEADS)
    if model.num_classes < 0 or model.num_classes == 1:
        raise invalid(
            "model.num_classes", model.num_classes, "must be 0 (the data's classes) or at least 2 classes"
        )
    check_range("model.dropout", model.dropout, 0.0, 1.0, high_open=True)
    check_range("model.label_smoothing", model.label_smoothing, 0.0, 1.0, high_open=True)
    check_range("model.cosine_scale", model.cosine_scale, 0.0, low_open=True)


def validate_config(cfg: ClassificationConfig) -> None:
    """Check the `data`, `model` and `eval` sections of a classification run.

    Raises:
        ConfigError: naming the first bad key, its value and what was expected.
    """
    validate_model(cfg.model)
    validate_data(cfg.data, cfg.train.batch_size)
    check_tta("eval.tta", cfg.eval.tta)
