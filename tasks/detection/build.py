"""The one place where a detection config becomes keyword arguments (models never see a config)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torchvision.models.detection import FasterRCNN

from tasks.common.backbone import build_backbone, group_norm
from tasks.engine.config import ConfigError

from .config import DetModelConfig
from .model import build_faster_rcnn, load_torchvision_detector_weights


def build_detector(cfg: DetModelConfig, num_classes: int, *, load_weights: bool = True) -> FasterRCNN:
    """Backbone + FPN + Faster R-CNN from the ``model`` config section.

    Args:
        cfg: model section.
        num_classes: classes including background.
        load_weights: load ``cfg.weights`` / ``cfg.detector_weights`` (off when a full checkpoint follows).
    """
    norm = cfg.backbone.norm
    if norm == "frozen_bn" and not (cfg.backbone.weights or cfg.detector_weights):
        warnings.warn(
            "model.backbone.norm=frozen_bn without model.backbone.weights or model.detector_weights freezes "
            "the random BatchNorm initialisation (identity); use norm=bn or gn when training from scratch.",
            UserWarning,
            stacklevel=2,
        )
    fpn_norm = functools.partial(group_norm, groups=cfg.backbone.norm_groups) if norm == "gn" else None
    backbone = build_backbone(cfg.backbone, out_indices=cfg.out_indices, load_weights=load_weights)
    model = build_faster_rcnn(
        backbone,
        num_classes,
        fpn_channels=cfg.fpn_channels,
        extra_level=cfg.extra_level,
        fpn_norm_layer=fpn_norm,
        anchor_sizes=cfg.anchor_sizes or None,
        aspect_ratios=cfg.aspect_ratios,
        min_size=cfg.min_size[0] if len(cfg.min_size) == 1 else cfg.min_size,
        max_size=cfg.max_size,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_fg_iou_thresh=cfg.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=cfg.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_positive_fraction=cfg.rpn_positive_fraction,
        roi_output_size=cfg.roi_output_size,
        roi_sampling_ratio=cfg.roi_sampling_ratio,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        box_fg_iou_thresh=cfg.box_fg_iou_thresh,
        box_bg_iou_thresh=cfg.box_bg_iou_thresh,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_positive_fraction=cfg.box_positive_fraction,
    )
    if load_weights and cfg.detector_weights:
        if not Path(cfg.detector_weights).is_file():
            raise ConfigError(
                f"model.detector_weights={cfg.detector_weights!r}: file not found (expected a "
                "torchvision Faster R-CNN state dict, e.g. fasterrcnn_resnet50_fpn_coco-258fb6c6.pth)"
            )
        state = torch.load(cfg.detector_weights, map_location="cpu", weights_only=True)
        skipped = load_torchvision_detector_weights(model, state, skip_mismatched=True)
        if skipped:
            warnings.warn(
                f"model.detector_weights: {len(skipped)} tensor(s) with another shape were left "
                f"at their initialisation (new classes): {skipped}",
                UserWarning,
                stacklevel=2,
            )
    return model
