"""Typed config of the segmentation task (sections model, data, loss, eval on top of RunConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tasks.common.backbone import MOVED_BACKBONE_KEYS, BackboneConfig
from tasks.engine.config import RunConfig

from .transforms import SegmentationAugmentConfig


@dataclass
class SegmentationModelConfig:
    """U-Net on our backbone. Changing any of these makes old checkpoints incompatible (resume refuses)."""

    MOVED_KEYS: ClassVar[dict[str, str]] = MOVED_BACKBONE_KEYS

    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # its in_chans: image channels read
    num_classes: int = 2  # classes of the label map (binary mode: 2, class 1 is the foreground)
    mode: str = "multiclass"  # binary | multiclass | multilabel
    regions: list[list[int]] = field(default_factory=list)  # multilabel: one list of class ids per output
    region_names: list[str] = field(default_factory=list)
    encoder_depth: int = 5  # 3..5 backbone levels below the input resolution (stem=level 0 included)
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    decoder_attention: str | None = None  # None | scse
    decoder_norm: str = "batchnorm"  # batchnorm | instancenorm | groupnorm | identity
    decoder_norm_groups: int = 8  # GroupNorm groups
    deep_supervision: int = 0  # number of auxiliary heads on coarser decoder levels (0 = off)


@dataclass
class SegmentationDataConfig:
    """Where the data is and how to read it. With ``manifest`` set, dataset keys come from the manifest."""

    root: str = ""
    manifest: str = ""  # dataset.json-style file (relative to root); "" = use the keys below
    format: str = "folder"  # folder | nifti
    images_dir: str = "images"
    masks_dir: str = "masks"
    file_ending: str = ""
    mask_suffix: str = ""
    class_names: list[str] = field(default_factory=list)  # default: class0..class{C-1}
    value_map: dict[int, int] = field(default_factory=dict)  # raw mask value -> class index (e.g. {255: 1})
    case_pattern: str = ""  # regex on the stem; group 1 is the case/patient id (default: each image a case)
    spacing: list[float] = field(default_factory=list)  # mm per pixel (row, col) for HD95 of 2D images
    normalization: str = "minmax"  # imagenet | zscore | minmax | ct_window | none
    ct_window: list[float] = field(default_factory=lambda: [40.0, 400.0])  # [center, width] in HU
    val_fraction: float = 0.2  # share of the cases held out (seeded); 0 = no validation
    split_seed: int = 0
    # k-fold cross-validation (tools/train_cv.py): 0 = off (the val_fraction split); else k >= 2 folds
    num_folds: int = 0
    fold: int = 0  # with num_folds: the fold of cases validated on, 0..num_folds-1 (the rest trains)
    splits_file: str = ""  # with num_folds: the splits.json of the folds ("" = made from split_seed)
    nifti_axis: int = 2  # axis of the volume along which 2D slices are taken
    cache_volumes: int = 4  # NIfTI volumes kept decoded in memory per worker
    augment: SegmentationAugmentConfig = field(default_factory=SegmentationAugmentConfig)


@dataclass
class SegmentationLossConfig:
    """Loss from smp: sum of ``dice_weight`` * Dice and ``ce_weight`` * (cross-entropy or BCE or focal)."""

    name: str = "dice_ce"  # dice_ce | dice_focal | ce | focal | dice
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    focal_gamma: float = 2.0
    deep_supervision_decay: float = 0.5  # weight of aux head k (k=1 coarsest-but-one...) = decay**k


@dataclass
class SegmentationEvalConfig:
    """Validation / prediction settings."""

    threshold: float = 0.5  # binary / multilabel probability threshold
    empty_rule: str = "nan"  # nan | one (metrics when ground truth and prediction are both empty)
    hd95: bool = True
    background_class: int | None = 0  # left out of dice_mean (None: average all classes)
    tile_size: list[int] = field(
        default_factory=list
    )  # [] = whole image (padded to stride); else sliding window
    tile_overlap: float = 0.5
    overlays: int = 4  # PNG overlays written per evaluation
    # test-time augmentation per tile, probabilities averaged: [] = off; any of hflip, vflip, rotate90
    tta: list[str] = field(default_factory=list)


@dataclass
class SegmentationConfig(RunConfig):
    """Complete segmentation run config (tools/train_seg.py)."""

    MOVED_KEYS: ClassVar[dict[str, str]] = {"aug": "data.augment"}

    model: SegmentationModelConfig = field(default_factory=SegmentationModelConfig)
    data: SegmentationDataConfig = field(default_factory=SegmentationDataConfig)
    loss: SegmentationLossConfig = field(default_factory=SegmentationLossConfig)
    eval: SegmentationEvalConfig = field(default_factory=SegmentationEvalConfig)
    output_dir: str = "runs/segmentation"
