"""Checks of the few-shot config values, run when the Task is built (before any data or model work).

Bad values otherwise fail late, far from their key, or not at all: `data.rotations=[0, 0]` makes two
identical "classes", 1-way validation episodes are always right, and `data.image_size=-32` surfaces as
a transform error without the key. Every message names the dotted key, the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from tasks.common.backbone import validate_backbone
from tasks.common.tta import check_tta
from tasks.engine.checks import check_one_of, check_range, invalid

from .config import TRAIN_METHODS, FewShotConfig, FewShotDataConfig, FewShotModelConfig
from .transforms import FewShotAugmentConfig

CHANNELS = (1, 3)
SPLIT_BY = ("class", "group")


def check_at_least(prefix: str, cfg, names: Sequence[str], low: int) -> None:
    """Require `getattr(cfg, name) >= low` for every name; keys are reported as `prefix.name`."""
    for name in names:
        value = getattr(cfg, name)
        if value < low:
            raise invalid(f"{prefix}.{name}", value, f"must be >= {low}")


def check_split(data: FewShotDataConfig) -> None:
    """Fractions (three shares summing to 1), split_by, and the split file when one is named."""
    check_one_of("data.split_by", data.split_by, SPLIT_BY)
    if data.split_file:
        if not Path(data.split_file).is_file():
            raise invalid("data.split_file", data.split_file, "file not found (a JSON split, see save_split)")
        return
    fractions = list(data.split_fractions)
    valid = len(fractions) == 3 and all(math.isfinite(f) and f >= 0 for f in fractions)
    if not valid or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise invalid(
            "data.split_fractions", fractions, "expected three shares >= 0 (base, val, novel) summing to 1"
        )


def check_rotations(rotations: Sequence[int]) -> None:
    """Multiples of 90 degrees (exact `rot90`), each angle once: a repeated angle is a duplicate class."""
    if any(r % 90 for r in rotations):
        raise invalid("data.rotations", list(rotations), "every angle must be a multiple of 90 degrees")
    angles = [r % 360 for r in rotations]
    if len(set(angles)) != len(angles):
        raise invalid("data.rotations", list(rotations), "an angle (modulo 360) is listed twice")


def check_augment(aug: FewShotAugmentConfig) -> None:
    """The ``data.augment`` section."""
    check_range("data.augment.rotate", aug.rotate, 0, 180)
    check_range("data.augment.translate", aug.translate, 0, 1)
    check_range("data.augment.scale", aug.scale, 0, 1, high_open=True)
    check_range("data.augment.hflip", aug.hflip, 0, 1)
    check_range("data.augment.fill", aug.fill, 0, 255)


def validate_data(data: FewShotDataConfig, episodic: bool) -> None:
    """Check every `data.*` value whose bad value would crash later or silently misbehave."""
    if data.image_size < 1:
        raise invalid("data.image_size", data.image_size, "must be a positive number of pixels")
    check_split(data)
    check_rotations(data.rotations)
    check_augment(data.augment)
    if episodic:
        # A 1-way episode is always answered right: it would train (and report) nothing.
        check_at_least("data", data, ["n_way"], 2)
        check_at_least("data", data, ["k_shot", "q_query", "episodes_per_epoch"], 1)
    check_at_least("data", data, ["val_episodes"], 0)
    if data.val_episodes > 0:
        check_at_least("data", data, ["val_n_way"], 2)
        check_at_least("data", data, ["val_k_shot", "val_q_query"], 1)


def validate_model(model: FewShotModelConfig) -> None:
    """Check the `model.*` values before the network is built (or the data is read)."""
    check_one_of("model.method", model.method, list(TRAIN_METHODS))
    validate_backbone(model.backbone)
    # Images are read as grayscale or RGB (tasks.common.images.read_image): the backbone takes one of those.
    check_one_of("model.backbone.in_chans", model.backbone.in_chans, CHANNELS)
    check_range("model.cosine_scale", model.cosine_scale, 0, what="0 = Chen et al.'s rule")


def validate_config(cfg: FewShotConfig) -> None:
    """Check the `data`, `model` and `eval` sections of a few-shot base-training run.

    Raises:
        ConfigError: naming the first bad key, its value and what was expected.
    """
    validate_model(cfg.model)
    validate_data(cfg.data, episodic=cfg.model.method == "protonet")
    check_tta("eval.tta", cfg.eval.tta)
