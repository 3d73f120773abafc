"""Typed configuration of the detection task: ``model`` and ``data`` next to the engine's ``train``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tasks.common.backbone import MOVED_BACKBONE_KEYS, BackboneConfig
from tasks.engine.config import RunConfig

from .transforms import DetectionAugmentConfig


@dataclass
class DetectionModelConfig:
    """Backbone, FPN or C4, and Faster R-CNN settings. Defaults are torchvision's fasterrcnn_resnet50_fpn."""

    MOVED_KEYS: ClassVar[dict[str, str]] = MOVED_BACKBONE_KEYS

    # backbone.norm=gn also puts GroupNorm (backbone.norm_groups) in the FPN; frozen_bn is torchvision's
    # choice with pretrained weights (torchvision's trainable_layers=3 is backbone.frozen_stages=1).
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    detector_weights: str = ""  # torchvision Faster R-CNN state dict file (e.g. COCO-trained) to start from
    # fpn | c4: RPN on layer3, RoIs through the backbone's layer4 (needs out_indices [3], extra_level none)
    head: str = "fpn"
    out_indices: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # backbone levels the FPN reads
    fpn_channels: int = 256  # FPN width (head=fpn only)
    extra_level: str = "pool"  # pool | p6p7 | none (head=fpn; c4: none)
    # one list per FPN level; [] = 8 x stride (c4: one list; [] = [[32, 64, 128, 256, 512]])
    anchor_sizes: list[list[int]] = field(default_factory=list)
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    min_size: list[int] = field(default_factory=lambda: [800])  # several values = multi-scale training
    max_size: int = 1333
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    roi_output_size: int = 7  # RoIAlign output side (c4: 14, which layer4 halves to 7, as detectron2)
    roi_sampling_ratio: int = 2  # RoIAlign samples per bin side; 0 = adaptive (detectron2's C4)
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    # Filled from the training annotations when empty; stored so that checkpoints know their classes.
    category_ids: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


@dataclass
class DetectionDataConfig:
    """COCO-format data. ``root`` is a shorthand for ``root/annotations.json`` + ``root/images``."""

    root: str = ""
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""  # empty: hold out val_fraction of the training images (seeded)
    val_images: str = ""  # empty: same folder as train_images
    val_fraction: float = 0.2
    split_seed: int = 0
    check_policy: str = "fail"  # fail | clip | drop (see tasks/detection/data_check.py)
    check_files: bool = True  # open every image header before training
    box_tolerance: float = 1.0  # pixels a box may pass the border before it is an error
    keep_empty_images: bool = True  # images without boxes train as negatives
    group_aspect_ratio: bool = True  # batches of same-orientation images (less padding)
    augment: DetectionAugmentConfig = field(default_factory=DetectionAugmentConfig)
    num_vis_images: int = 4  # validation images drawn as PNG after each evaluation
    vis_score_thresh: float = 0.3


@dataclass
class DetectionEvalConfig:
    """Validation / prediction settings."""

    # test-time augmentation, boxes merged by per-class NMS: [] = off; any of hflip, vflip, rotate90
    tta: list[str] = field(default_factory=list)
    # TTA scales: short sides (as model.min_size) to detect at, each in every view; [] = the test size
    tta_min_sizes: list[int] = field(default_factory=list)


@dataclass
class DetectionConfig(RunConfig):
    """Full run configuration of ``tools/train_det.py``."""

    model: DetectionModelConfig = field(default_factory=DetectionModelConfig)
    data: DetectionDataConfig = field(default_factory=DetectionDataConfig)
    eval: DetectionEvalConfig = field(default_factory=DetectionEvalConfig)
    output_dir: str = "runs/detection"
