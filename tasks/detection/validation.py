"""Range checks of the detection config's numbers, run when the task is built (before any file is read).

The type of every value is checked when the config loads; these checks catch values of the right type
that torchvision or albumentations would only reject at the first batch (after the run folder exists,
with a traceback that does not name the key) or that would silently train something else, e.g. a zero
aspect ratio (infinite anchors) or ``rpn_bg_iou_thresh`` above ``rpn_fg_iou_thresh``.
"""

from __future__ import annotations

from tasks.common.backbone import validate_backbone
from tasks.common.tta import check_tta
from tasks.engine.checks import check_all_positive, check_one_of, check_range, check_unit, invalid

from .c4 import check_head
from .data_check import POLICIES


def _check_matcher(prefix: str, fg: float, bg: float) -> None:
    # torchvision's Matcher asserts bg <= fg; between them proposals are ignored, above fg positive.
    check_unit(f"model.{prefix}_fg_iou_thresh", fg, "an IoU")
    check_unit(f"model.{prefix}_bg_iou_thresh", bg, "an IoU")
    if bg > fg:
        raise invalid(f"model.{prefix}_bg_iou_thresh", bg, f"must be <= model.{prefix}_fg_iou_thresh={fg}")


def _check_sampler(prefix: str, batch_size: int, positive_fraction: float) -> None:
    check_range(f"model.{prefix}_batch_size_per_image", batch_size, 1)
    # 0 samples no positives at all: the box regression would never be trained.
    check_range(f"model.{prefix}_positive_fraction", positive_fraction, 0, 1, low_open=True)


def check_model(m) -> None:
    """The ``model`` section (DetectionModelConfig)."""
    check_head(m)  # model.head first: with c4 it names the out_indices C4 needs
    if not m.out_indices or any(b <= a for a, b in zip(m.out_indices, m.out_indices[1:])):
        raise invalid(
            "model.out_indices", list(m.out_indices), "must be increasing backbone levels, e.g. [1, 2, 3, 4]"
        )
    validate_backbone(m.backbone)
    check_range("model.fpn_channels", m.fpn_channels, 1)
    if m.backbone.norm == "gn" and m.fpn_channels % m.backbone.norm_groups:
        # backbone.norm=gn puts GroupNorm in the FPN too: its width must split into the groups.
        raise invalid(
            "model.fpn_channels", m.fpn_channels, "must be a multiple of model.backbone.norm_groups"
        )
    for i, sizes in enumerate(m.anchor_sizes):
        check_all_positive(f"model.anchor_sizes[{i}]", sizes, "anchor size")
    check_all_positive("model.aspect_ratios", m.aspect_ratios, "aspect ratio")
    check_all_positive("model.min_size", m.min_size, "size")
    check_range("model.max_size", m.max_size, 1)
    for stage in ("train", "test"):
        check_range(f"model.rpn_pre_nms_top_n_{stage}", getattr(m, f"rpn_pre_nms_top_n_{stage}"), 1)
        check_range(f"model.rpn_post_nms_top_n_{stage}", getattr(m, f"rpn_post_nms_top_n_{stage}"), 1)
    check_unit("model.rpn_nms_thresh", m.rpn_nms_thresh, "an IoU")
    check_unit("model.box_nms_thresh", m.box_nms_thresh, "an IoU")
    _check_matcher("rpn", m.rpn_fg_iou_thresh, m.rpn_bg_iou_thresh)
    _check_matcher("box", m.box_fg_iou_thresh, m.box_bg_iou_thresh)
    _check_sampler("rpn", m.rpn_batch_size_per_image, m.rpn_positive_fraction)
    _check_sampler("box", m.box_batch_size_per_image, m.box_positive_fraction)
    check_range("model.roi_output_size", m.roi_output_size, 1)
    check_unit("model.box_score_thresh", m.box_score_thresh, "a score")
    check_range("model.box_detections_per_img", m.box_detections_per_img, 1)
    if len(set(m.category_ids)) != len(m.category_ids):
        raise invalid("model.category_ids", list(m.category_ids), "ids must be unique")
    if m.class_names and len(m.class_names) != len(m.category_ids):
        raise invalid(
            "model.class_names",
            list(m.class_names),
            f"needs one name per model.category_ids entry ({len(m.category_ids)})",
        )


def check_augment(a) -> None:
    """The ``data.augment`` section (DetectionAugmentConfig)."""
    for key in ("hflip", "scale_jitter_prob", "color_jitter_prob"):
        check_unit(f"data.augment.{key}", getattr(a, key))
    # The zoom range is [1 - s, 1 + s]: s >= 1 would include zero or negative scales.
    check_range("data.augment.scale_jitter", a.scale_jitter, 0, 1, high_open=True)
    check_range("data.augment.color_jitter", a.color_jitter, 0)
    check_unit("data.augment.min_visibility", a.min_visibility, "a fraction of the box area")
    check_range("data.augment.min_box_size", a.min_box_size, 0)


def check_data(d) -> None:
    """The ``data`` section (DetectionDataConfig)."""
    check_range("data.val_fraction", d.val_fraction, 0, 1, high_open=True, what="0: no held-out validation")
    check_one_of("data.check_policy", d.check_policy, POLICIES)
    check_range("data.box_tolerance", d.box_tolerance, 0)
    check_range("data.num_vis_images", d.num_vis_images, 0)
    check_unit("data.vis_score_thresh", d.vis_score_thresh, "a score")
    check_augment(d.augment)


def check_eval(e) -> None:
    """The ``eval`` section (DetectionEvalConfig)."""
    check_tta("eval.tta", e.tta)
    if e.tta_min_sizes:
        check_all_positive("eval.tta_min_sizes", e.tta_min_sizes, "size")


def validate_config(cfg) -> None:
    """Check the ``model``, ``data`` and ``eval`` sections of a DetectionConfig.

    Raises:
        ConfigError: naming the dotted key, its value and what was expected.
    """
    check_model(cfg.model)
    check_data(cfg.data)
    check_eval(cfg.eval)
