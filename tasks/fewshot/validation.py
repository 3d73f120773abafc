"""Checks of the few-shot config values, run when the Task is built (before any data or model work).

Bad values otherwise fail late, far from their key, or not at all: `data.rotations=[0, 0]` makes two
identical "classes", 1-way validation episodes are always right, and `data.image_size=-32` surfaces as
a transform error without the key. Every message names the dotted key, the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from backbones.resnet import ARCHS, STEM_TYPES
from tasks.engine.config import ConfigError

from .config import TRAIN_METHODS, FewShotConfig, FewShotDataConfig, FewShotModelConfig

CHANNELS = (1, 3)
SPLIT_BY = ("class", "group")


def show(value) -> str:
    """A value as the user wrote it: 0.0 as 0, lists item by item (for messages)."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def fail(key: str, value, expected: str) -> ConfigError:
    """The error for one bad value: `data.image_size=-32: must be a positive number of pixels`."""
    return ConfigError(f"{key}={show(value)}: {expected}", key)


def check_one_of(key: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise fail(key, value, f"expected one of {list(allowed)}")


def check_at_least(prefix: str, cfg, names: Sequence[str], low: int) -> None:
    """Require `getattr(cfg, name) >= low` for every name; keys are reported as `prefix.name`."""
    for name in names:
        value = getattr(cfg, name)
        if value < low:
            raise fail(f"{prefix}.{name}", value, f"must be >= {low}")


def check_split(data: FewShotDataConfig) -> None:
    """Fractions (three shares summing to 1), split_by, and the split file when one is named."""
    check_one_of("data.split_by", data.split_by, SPLIT_BY)
    if data.split_file:
        if not Path(data.split_file).is_file():
            raise fail("data.split_file", data.split_file, "file not found (a JSON split, see save_split)")
        return
    fractions = list(data.split_fractions)
    valid = len(fractions) == 3 and all(math.isfinite(f) and f >= 0 for f in fractions)
    if not valid or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise fail(
            "data.split_fractions", fractions, "expected three shares >= 0 (base, val, novel) summing to 1"
        )


def check_rotations(rotations: Sequence[int]) -> None:
    """Multiples of 90 degrees (exact `rot90`), each angle once: a repeated angle is a duplicate class."""
    if any(r % 90 for r in rotations):
        raise fail("data.rotations", list(rotations), "every angle must be a multiple of 90 degrees")
    angles = [r % 360 for r in rotations]
    if len(set(angles)) != len(angles):
        raise fail("data.rotations", list(rotations), "an angle (modulo 360) is listed twice")


def validate_data(data: FewShotDataConfig, episodic: bool) -> None:
    """Check every `data.*` value whose bad value would crash later or silently misbehave."""
    if data.image_size < 1:
        raise fail("data.image_size", data.image_size, "must be a positive number of pixels")
    check_one_of("data.channels", data.channels, CHANNELS)
    check_split(data)
    check_rotations(data.rotations)
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
    check_one_of("model.arch", model.arch, sorted(ARCHS))
    check_one_of("model.stem_type", model.stem_type, STEM_TYPES)
    if not math.isfinite(model.cosine_scale) or model.cosine_scale < 0:
        raise fail("model.cosine_scale", model.cosine_scale, "must be >= 0 (0 = Chen et al.'s rule)")


def validate_config(cfg: FewShotConfig) -> None:
    """Check the `data` and `model` sections of a few-shot base-training run.

    Raises:
        ConfigError: naming the first bad key, its value and what was expected.
    """
    validate_model(cfg.model)
    validate_data(cfg.data, episodic=cfg.model.method == "protonet")
