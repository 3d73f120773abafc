"""Range checks of the detection config's numbers, run when the task is built (before any file is read).

The type of every value is checked when the config loads; these checks catch values of the right type
that torchvision or albumentations would only reject at the first batch (after the run folder exists,
with a traceback that does not name the key) or that would silently train something else, e.g. a zero
aspect ratio (infinite anchors) or ``rpn_bg_iou_thresh`` above ``rpn_fg_iou_thresh``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .data_check import POLICIES, DatasetError


def _fail(key: str, value: object, expected: str) -> None:
    raise DatasetError(f"{key}={value!r}: {expected}")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def check_min(key: str, value: float, low: float) -> None:
    """``value >= low`` (and finite)."""
    if not (_finite(value) and value >= low):
        _fail(key, value, f"must be >= {low}")


def check_positive(key: str, value: float) -> None:
    """``value > 0`` (and finite)."""
    if not (_finite(value) and value > 0):
        _fail(key, value, "must be > 0")


def check_unit(key: str, value: float, what: str = "a probability") -> None:
    """``0 <= value <= 1`` (probabilities, IoU and score thresholds)."""
    if not (_finite(value) and 0 <= value <= 1):
        _fail(key, value, f"must be in [0, 1] ({what})")


def check_all_positive(key: str, values: Sequence[float], what: str) -> None:
    """A non-empty list whose every entry is > 0."""
    if not values:
        _fail(key, list(values), f"must list at least one {what}")
    if not all(_finite(v) and v > 0 for v in values):
        _fail(key, list(values), "every value must be > 0")


def _check_matcher(prefix: str, fg: float, bg: float) -> None:
    # torchvision's Matcher asserts bg <= fg; between them proposals are ignored, above fg positive.
    check_unit(f"model.{prefix}_fg_iou_thresh", fg, "an IoU")
    check_unit(f"model.{prefix}_bg_iou_thresh", bg, "an IoU")
    if bg > fg:
        _fail(f"model.{prefix}_bg_iou_thresh", bg, f"must be <= model.{prefix}_fg_iou_thresh={fg}")


def _check_sampler(prefix: str, batch_size: int, positive_fraction: float) -> None:
    check_min(f"model.{prefix}_batch_size_per_image", batch_size, 1)
    value = positive_fraction
    if not (_finite(value) and 0 < value <= 1):
        # 0 samples no positives at all: the box regression would never be trained.
        _fail(f"model.{prefix}_positive_fraction", value, "must be in (0, 1]")


def check_model(m) -> None:
    """The ``model`` section (DetModelConfig)."""
    if not m.out_indices or any(b <= a for a, b in zip(m.out_indices, m.out_indices[1:])):
        _fail(
            "model.out_indices", list(m.out_indices), "must be increasing backbone levels, e.g. [1, 2, 3, 4]"
        )
    if m.frozen_stages not in range(-1, 5):
        _fail("model.frozen_stages", m.frozen_stages, "must be in -1..4 (-1 trains everything)")
    check_min("model.gn_groups", m.gn_groups, 1)
    check_min("model.fpn_channels", m.fpn_channels, 1)
    for i, sizes in enumerate(m.anchor_sizes):
        check_all_positive(f"model.anchor_sizes[{i}]", sizes, "anchor size")
    check_all_positive("model.aspect_ratios", m.aspect_ratios, "aspect ratio")
    check_all_positive("model.min_size", m.min_size, "size")
    check_min("model.max_size", m.max_size, 1)
    for stage in ("train", "test"):
        check_min(f"model.rpn_pre_nms_top_n_{stage}", getattr(m, f"rpn_pre_nms_top_n_{stage}"), 1)
        check_min(f"model.rpn_post_nms_top_n_{stage}", getattr(m, f"rpn_post_nms_top_n_{stage}"), 1)
    check_unit("model.rpn_nms_thresh", m.rpn_nms_thresh, "an IoU")
    check_unit("model.box_nms_thresh", m.box_nms_thresh, "an IoU")
    _check_matcher("rpn", m.rpn_fg_iou_thresh, m.rpn_bg_iou_thresh)
    _check_matcher("box", m.box_fg_iou_thresh, m.box_bg_iou_thresh)
    _check_sampler("rpn", m.rpn_batch_size_per_image, m.rpn_positive_fraction)
    _check_sampler("box", m.box_batch_size_per_image, m.box_positive_fraction)
    check_min("model.roi_output_size", m.roi_output_size, 1)
    check_unit("model.box_score_thresh", m.box_score_thresh, "a score")
    check_min("model.box_detections_per_img", m.box_detections_per_img, 1)
    if len(set(m.category_ids)) != len(m.category_ids):
        _fail("model.category_ids", list(m.category_ids), "ids must be unique")
    if m.class_names and len(m.class_names) != len(m.category_ids):
        _fail(
            "model.class_names",
            list(m.class_names),
            f"needs one name per model.category_ids entry ({len(m.category_ids)})",
        )


def check_augment(a) -> None:
    """The ``data.augment`` section (AugmentConfig)."""
    for key in ("hflip", "scale_jitter_prob", "color_jitter_prob"):
        check_unit(f"data.augment.{key}", getattr(a, key))
    if not (_finite(a.scale_jitter) and 0 <= a.scale_jitter < 1):
        # The zoom range is [1 - s, 1 + s]: s >= 1 would include zero or negative scales.
        _fail("data.augment.scale_jitter", a.scale_jitter, "must be in [0, 1)")
    check_min("data.augment.color_jitter", a.color_jitter, 0)
    check_unit("data.augment.min_visibility", a.min_visibility, "a fraction of the box area")
    check_min("data.augment.min_box_size", a.min_box_size, 0)


def check_data(d) -> None:
    """The ``data`` section (DetDataConfig)."""
    if not (_finite(d.val_fraction) and 0 <= d.val_fraction < 1):
        _fail("data.val_fraction", d.val_fraction, "must be in [0, 1) (0: no held-out validation)")
    if d.check_policy not in POLICIES:
        _fail("data.check_policy", d.check_policy, f"must be one of {list(POLICIES)}")
    check_min("data.box_tolerance", d.box_tolerance, 0)
    check_min("data.num_vis_images", d.num_vis_images, 0)
    check_unit("data.vis_score_thresh", d.vis_score_thresh, "a score")
    check_augment(d.augment)


def validate_config(cfg) -> None:
    """Check the ``model`` and ``data`` sections of a DetectionConfig.

    Raises:
        DatasetError: naming the dotted key, its value and what was expected.
    """
    check_model(cfg.model)
    check_data(cfg.data)
