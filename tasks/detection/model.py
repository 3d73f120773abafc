"""FPN adapter for our backbones and the Faster R-CNN builders (torchvision's detector, unchanged).

The adapter reads input widths and strides from ``backbone.feature_info`` and names its attributes like
torchvision's ``BackboneWithFPN`` (``body``, ``fpn``), so torchvision detection checkpoints load with the
same keys and users can hand it to ``torchvision.models.detection.FasterRCNN`` directly. The C4 layout
(RPN on layer3, layer4 as the box head) is in `tasks.detection.c4`; `build_detector` picks by
``model.head``.
"""

from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from backbones.weights import WeightsMismatchError
from tasks.common.backbone import build_backbone, group_norm
from tasks.engine.config import ConfigError

from .c4 import C4_ANCHOR_SIZES, build_faster_rcnn_c4, check_head
from .config import DetectionModelConfig

EXTRA_LEVELS = ("pool", "p6p7", "none")


class BackboneWithFPN(nn.Module):
    """Our ResNet (any depth, any ``out_indices``) followed by torchvision's FeaturePyramidNetwork.

    Outputs are named ``"0", "1", ...`` for the backbone levels (as torchvision's own adapter, so the
    default ``MultiScaleRoIAlign(["0", "1", "2", "3"])`` of ``FasterRCNN`` works) plus ``"pool"`` (or
    ``"p6", "p7"``) for the extra levels.

    Args:
        backbone: a module returning an ordered dict of features and exposing ``feature_info`` with
            ``channels`` and ``strides`` lists (e.g. ``backbones.resnet50(out_indices=(1, 2, 3, 4))``).
        out_channels: FPN width (256 in the FPN paper).
        extra_level: ``"pool"`` adds a max-pooled level (Faster R-CNN, Lin et al. 2017); ``"p6p7"`` two
            strided convs (RetinaNet); ``"none"`` nothing.
        norm_layer: optional norm for the FPN convs (e.g. GroupNorm when training from scratch).
    """

    def __init__(
        self,
        backbone: nn.Module,
        out_channels: int = 256,
        extra_level: str = "pool",
        norm_layer: Callable[..., nn.Module] | None = None,
    ):
        super().__init__()
        if extra_level not in EXTRA_LEVELS:
            raise ValueError(f"extra_level must be one of {EXTRA_LEVELS}, got {extra_level!r}")
        info = getattr(backbone, "feature_info", None)
        if info is None or not hasattr(info, "channels") or not hasattr(info, "strides"):
            raise ValueError(
                "backbone must expose feature_info with .channels and .strides (see backbones.ResNet)"
            )
        in_channels, strides = list(info.channels), list(info.strides)
        if not in_channels:
            raise ValueError("backbone returns no levels: set out_indices, e.g. (1, 2, 3, 4)")
        if any(b <= a for a, b in zip(strides, strides[1:])):
            raise ValueError(
                f"FPN needs levels of increasing stride; backbone strides are {strides} "
                "(out_indices must be increasing and output_stride=32)"
            )
        extra: ExtraFPNBlock | None = None
        extra_names: list[str] = []
        if extra_level == "pool":
            extra, extra_names = LastLevelMaxPool(), ["pool"]
        elif extra_level == "p6p7":
            extra, extra_names = LastLevelP6P7(out_channels, out_channels), ["p6", "p7"]
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra, norm_layer=norm_layer)
        self.out_channels = out_channels
        self.level_names = [str(i) for i in range(len(in_channels))]
        self.feature_names = self.level_names + extra_names
        self.strides = strides + [strides[-1] * 2 ** (i + 1) for i in range(len(extra_names))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict(zip(self.level_names, features.values(), strict=True)))


def default_anchor_sizes(strides: Sequence[int], base: int = 8) -> tuple[tuple[int, ...], ...]:
    """One anchor size per level, ``base * stride`` (32..512 on P2..P6, as torchvision and the FPN paper)."""
    return tuple((base * s,) for s in strides)


def build_faster_rcnn(
    backbone: nn.Module,
    num_classes: int,
    *,
    fpn_channels: int = 256,
    extra_level: str = "pool",
    fpn_norm_layer: Callable[..., nn.Module] | None = None,
    anchor_sizes: Sequence[Sequence[int]] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] = (0.485, 0.456, 0.406),
    image_std: Sequence[float] = (0.229, 0.224, 0.225),
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_score_thresh: float = 0.0,
    roi_output_size: int = 7,
    roi_sampling_ratio: int = 2,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
) -> FasterRCNN:
    """torchvision ``FasterRCNN`` on ``backbone`` + FPN; defaults are torchvision's (the COCO recipe).

    Args:
        backbone: our ResNet (or anything with ``feature_info``); its ``out_indices`` are the FPN levels.
        num_classes: classes including background.
        fpn_channels, extra_level, fpn_norm_layer: see `BackboneWithFPN`.
        anchor_sizes: one tuple of sizes per FPN output (backbone levels + extra); default 8 x stride.
        aspect_ratios: anchor height/width ratios, shared by every level.
        min_size, max_size: torchvision's resize (a sequence of min sizes draws one at random in training).
        roi_output_size, roi_sampling_ratio: RoIAlign settings of the box head.
        The rpn_* and box_* arguments are passed to FasterRCNN as they are.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
    body = BackboneWithFPN(backbone, fpn_channels, extra_level, fpn_norm_layer)
    if anchor_sizes is None:
        anchor_sizes = default_anchor_sizes(body.strides)
    anchor_sizes = tuple(tuple(int(s) for s in sizes) for sizes in anchor_sizes)
    if len(anchor_sizes) != len(body.feature_names):
        raise ValueError(
            f"anchor_sizes has {len(anchor_sizes)} entries but the FPN has {len(body.feature_names)} "
            f"levels {body.feature_names} (strides {body.strides}); give one tuple per level"
        )
    if len({len(sizes) for sizes in anchor_sizes}) != 1:
        # torchvision's RPNHead is one conv shared by all levels: every level needs as many anchors.
        raise ValueError(f"anchor_sizes must give every level the same number of sizes, got {anchor_sizes}")
    anchors = AnchorGenerator(anchor_sizes, (tuple(float(r) for r in aspect_ratios),) * len(anchor_sizes))
    roi_pool = MultiScaleRoIAlign(
        body.level_names, output_size=roi_output_size, sampling_ratio=roi_sampling_ratio
    )
    return FasterRCNN(
        body,
        num_classes=num_classes,
        min_size=tuple(min_size) if isinstance(min_size, Sequence) else min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        rpn_nms_thresh=rpn_nms_thresh,
        rpn_fg_iou_thresh=rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=rpn_bg_iou_thresh,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
        rpn_score_thresh=rpn_score_thresh,
        box_roi_pool=roi_pool,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
        box_detections_per_img=box_detections_per_img,
        box_fg_iou_thresh=box_fg_iou_thresh,
        box_bg_iou_thresh=box_bg_iou_thresh,
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
    )


def convert_torchvision_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Map a torchvision ``fasterrcnn_resnet50_fpn`` state dict onto a detector from `build_faster_rcnn`.

    The module names already agree (``backbone.body.*`` is our ResNet with torchvision's attribute names,
    ``backbone.fpn.*`` is torchvision's FPN, heads are torchvision's), so the map only reconciles the norm
    layers: COCO checkpoints use FrozenBatchNorm2d (no ``num_batches_tracked``), randomly initialised
    torchvision models use BatchNorm2d (with it).
    """
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") and key not in target:
            continue
        out[key] = value
    for key, value in target.items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros_like(value)
    return out


def load_torchvision_detector_weights(
    model: nn.Module, state_dict: dict[str, torch.Tensor], *, skip_mismatched: bool = False
) -> list[str]:
    """Load torchvision Faster R-CNN weights into our detector with clear errors.

    Args:
        model: a detector from `build_faster_rcnn` with a ResNet-50 (or matching) backbone and 4 FPN levels.
        state_dict: e.g. ``torch.load("fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", weights_only=True)``.
        skip_mismatched: leave out tensors whose shape differs (typically the class-specific predictor when
            fine-tuning on a dataset with a different number of classes) instead of raising.

    Returns:
        The keys that were skipped because of a shape mismatch.
    """
    converted = convert_torchvision_state_dict(state_dict, model)
    target = model.state_dict()
    missing = sorted(set(target) - set(converted))
    unexpected = sorted(set(converted) - set(target))
    if missing or unexpected:
        raise WeightsMismatchError(
            f"torchvision detector weights do not fit this model: missing {missing[:8]} "
            f"({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)}); build the model "
            "with arch=resnet50, out_indices=(1, 2, 3, 4), extra_level='pool'"
        )
    mismatched = [k for k, v in converted.items() if v.shape != target[k].shape]
    if mismatched and not skip_mismatched:
        details = ", ".join(
            f"{k}: {tuple(converted[k].shape)} vs {tuple(target[k].shape)}" for k in mismatched[:5]
        )
        raise WeightsMismatchError(f"shape mismatch for {len(mismatched)} tensor(s): {details}")
    for key in mismatched:
        converted[key] = target[key]
    model.load_state_dict(converted)
    return mismatched


# ------------------------------------------------------------------------------- from the config


def build_detector(cfg: DetectionModelConfig, num_classes: int, *, load_weights: bool = True) -> FasterRCNN:
    """Backbone + FPN (``model.head=fpn``) or C4 (``c4``) Faster R-CNN from the ``model`` config section.

    Args:
        cfg: model section.
        num_classes: classes including background.
        load_weights: load ``cfg.weights`` / ``cfg.detector_weights`` (off when a full checkpoint follows).
    """
    check_head(cfg)
    norm = cfg.backbone.norm
    if norm == "frozen_bn" and not (cfg.backbone.weights or cfg.detector_weights):
        warnings.warn(
            "model.backbone.norm=frozen_bn without model.backbone.weights or model.detector_weights freezes "
            "the random BatchNorm initialisation (identity); use norm=bn or gn when training from scratch.",
            UserWarning,
            stacklevel=2,
        )
    backbone = build_backbone(cfg.backbone, out_indices=cfg.out_indices, load_weights=load_weights)
    if cfg.head == "c4":
        return build_faster_rcnn_c4(
            backbone,
            num_classes,
            anchor_sizes=cfg.anchor_sizes or C4_ANCHOR_SIZES,
            **_detector_kwargs(cfg),
        )
    fpn_norm = functools.partial(group_norm, groups=cfg.backbone.norm_groups) if norm == "gn" else None
    model = build_faster_rcnn(
        backbone,
        num_classes,
        fpn_channels=cfg.fpn_channels,
        extra_level=cfg.extra_level,
        fpn_norm_layer=fpn_norm,
        anchor_sizes=cfg.anchor_sizes or None,
        **_detector_kwargs(cfg),
    )
    if load_weights and cfg.detector_weights:
        load_detector_weights_file(model, cfg.detector_weights)
    return model


def _detector_kwargs(cfg: DetectionModelConfig) -> dict:
    """The keyword arguments both layouts take from the config: resize, anchors' ratios, RPN and RoI heads."""
    return dict(
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


def load_detector_weights_file(model: FasterRCNN, path: str) -> None:
    """``model.detector_weights``: a torchvision Faster R-CNN state dict file; new-class layers stay new."""
    if not Path(path).is_file():
        raise ConfigError(
            f"model.detector_weights={path!r}: file not found (expected a "
            "torchvision Faster R-CNN state dict, e.g. fasterrcnn_resnet50_fpn_coco-258fb6c6.pth)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    skipped = load_torchvision_detector_weights(model, state, skip_mismatched=True)
    if skipped:
        warnings.warn(
            f"model.detector_weights: {len(skipped)} tensor(s) with another shape were left "
            f"at their initialisation (new classes): {skipped}",
            UserWarning,
            stacklevel=3,
        )
