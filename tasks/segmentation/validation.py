"""Range checks of the segmentation config's values, run when the task is built (before any file is read).

The type of every value is checked when the config loads; these checks catch values of the right type
that albumentations, the data pipeline or the sliding window would only reject at the first batch or
evaluation (after the run folder exists, with a traceback that does not name the key), or that would
silently train something else, e.g. a loss whose terms all have weight 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tasks.common.backbone import validate_backbone
from tasks.common.tta import check_tta
from tasks.engine.checks import check_one_of, check_range, invalid, is_number, show
from tasks.engine.config import ConfigError

from .manifest import FORMATS
from .metrics import EMPTY_RULES
from .transforms import NORMALIZATIONS


def check_size_pair(key: str, values: Sequence[float], what: str) -> None:
    """``[]`` or two values > 0 (crop, tile and pixel sizes)."""
    if values and (len(values) != 2 or not all(is_number(v) and v > 0 for v in values)):
        raise invalid(key, list(values), f"must be [] or [{what}] with both values > 0")


def check_model(m) -> None:
    """The ``model`` section; mode, regions and encoder_depth are checked by the model builder."""
    validate_backbone(m.backbone)
    if not m.decoder_channels or not all(c >= 1 for c in m.decoder_channels):
        raise invalid("model.decoder_channels", list(m.decoder_channels), "every width must be >= 1")
    check_range("model.decoder_norm_groups", m.decoder_norm_groups, 1)
    check_range("model.deep_supervision", m.deep_supervision, 0)
    if m.region_names and len(m.region_names) != len(m.regions):
        raise invalid(
            "model.region_names",
            list(m.region_names),
            f"needs one name per model.regions entry ({len(m.regions)})",
        )


def check_data(d) -> None:
    """The ``data`` section (SegmentationDataConfig); class_names and value_map are checked against
    model.num_classes when the dataset spec is resolved (a manifest may define them instead)."""
    check_one_of("data.format", d.format, FORMATS)
    check_one_of("data.normalization", d.normalization, NORMALIZATIONS)
    if len(d.ct_window) != 2 or not all(is_number(v) for v in d.ct_window) or d.ct_window[1] <= 0:
        raise invalid("data.ct_window", list(d.ct_window), "must be [center, width] in HU with width > 0")
    check_size_pair("data.spacing", d.spacing, "row_mm, col_mm")
    check_range("data.val_fraction", d.val_fraction, 0, 1, high_open=True)
    check_one_of("data.nifti_axis", d.nifti_axis, (0, 1, 2))
    check_range("data.cache_volumes", d.cache_volumes, 1)
    if len(set(d.class_names)) != len(d.class_names):
        # Names identify the classes (a checkpoint's classes are matched by name).
        raise invalid("data.class_names", list(d.class_names), "names must be unique")
    if d.case_pattern:
        try:
            groups = re.compile(d.case_pattern).groups
        except re.error as err:
            message = f"is not a regular expression ({err})"
            raise invalid("data.case_pattern", d.case_pattern, message) from None
        if groups < 1:
            raise invalid(
                "data.case_pattern",
                d.case_pattern,
                "needs a group, e.g. '^(patient\\d+)_' (group 1 = case id)",
            )


def check_augment(a) -> None:
    """The ``data.augment`` section (SegmentationAugmentConfig)."""
    check_size_pair("data.augment.crop_size", a.crop_size, "height, width")
    for key in ("hflip", "vflip", "rotate90", "rotate_p", "elastic_p", "brightness_contrast_p"):
        check_range(f"data.augment.{key}", getattr(a, key), 0, 1)
    check_range("data.augment.rotate_limit", a.rotate_limit, 0, 180)
    check_range("data.augment.elastic_alpha", a.elastic_alpha, 0)
    check_range("data.augment.elastic_sigma", a.elastic_sigma, 0, low_open=True)
    check_range("data.augment.brightness_limit", a.brightness_limit, 0, 1)
    check_range("data.augment.contrast_limit", a.contrast_limit, 0, 1)


def check_loss(loss) -> None:
    """The ``loss`` section (SegmentationLossConfig); the name is checked when the loss is built."""
    check_range("loss.dice_weight", loss.dice_weight, 0)
    check_range("loss.ce_weight", loss.ce_weight, 0)
    check_range("loss.focal_gamma", loss.focal_gamma, 0)
    used = []
    if loss.name.startswith("dice"):
        used.append(("loss.dice_weight", loss.dice_weight))
    if loss.name in ("dice_ce", "ce", "dice_focal", "focal"):
        used.append(("loss.ce_weight", loss.ce_weight))
    if used and not any(weight > 0 for _, weight in used):
        keys = " and ".join(f"{k}={show(w)}" for k, w in used)
        raise ConfigError(
            f"{keys}: loss.name={loss.name!r} would be 0 for every batch (nothing trains); give its terms "
            "a weight > 0"
        )
    check_range("loss.deep_supervision_decay", loss.deep_supervision_decay, 0, 1, low_open=True)


def check_eval(e, mode: str, num_classes: int) -> None:
    """The ``eval`` section (SegmentationEvalConfig)."""
    check_range("eval.threshold", e.threshold, 0, 1)
    check_one_of("eval.empty_rule", e.empty_rule, EMPTY_RULES)
    if mode != "multilabel" and e.background_class is not None and not 0 <= e.background_class < num_classes:
        # A class index that does not exist would silently average every class into dice_mean.
        raise invalid(
            "eval.background_class",
            e.background_class,
            f"must be null or a class index in 0..{num_classes - 1} (model.num_classes={num_classes})",
        )
    check_tta("eval.tta", e.tta)
    check_size_pair("eval.tile_size", e.tile_size, "height, width")
    check_range("eval.tile_overlap", e.tile_overlap, 0, 1, high_open=True)
    check_range("eval.overlays", e.overlays, 0)


def validate_config(cfg) -> None:
    """Check the ``model``, ``data`` (``data.augment`` included), ``loss`` and ``eval`` sections.

    Raises:
        ConfigError: naming the dotted key, its value and what was expected.
    """
    check_model(cfg.model)
    check_data(cfg.data)
    check_augment(cfg.data.augment)
    check_loss(cfg.loss)
    check_eval(cfg.eval, cfg.model.mode, cfg.model.num_classes)
