"""Faster R-CNN in the ResNet-C4 layout (He et al. 2016; detectron2's ``Res5ROIHeads``), on torchvision's.

The RPN and RoIAlign read layer3 (stride 16, detectron2's ``res4``) with one anchor level; every RoI
(14 x 14 by default) then runs through the backbone's own layer4 (``res5``, whose first block halves it to
7 x 7), is average-pooled and goes to the box predictor. torchvision's ``FasterRCNN`` takes a custom
``box_head`` and ``box_predictor``, so RPN, RoI sampling, losses and post-processing are its own; what it
lacks is a head that *is* a backbone stage, written here.

State dict: layer4 stays where the ResNet keeps it, so the detector holds ``backbone.body.*`` (the whole
ResNet, with the same keys as the FPN detector's body and as a plain ResNet), ``rpn.*`` and
``roi_heads.box_predictor.*``; the box head owns no tensor. Loading backbone weights (a classifier's
checkpoint, torchvision or timm weights), ``frozen_stages`` (4 freezes the head too), ``norm``,
``norm_eval`` and ``grad_checkpointing`` therefore apply to layer4 as to any other stage, and a C4
checkpoint gives other tools a complete backbone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from backbones import ARCHS, ResNet
from tasks.engine.checks import check_one_of, invalid

HEADS = ("fpn", "c4")
C4_LEVEL = 3  # the trunk ends at layer3; layer4 is the box head
# detectron2's C4 anchors: five sizes on the one stride-16 level (x 3 aspect ratios = 15 per location).
C4_ANCHOR_SIZES = ((32, 64, 128, 256, 512),)


class ResNetC4Trunk(nn.Module):
    """The ResNet up to layer3, the feature map of the RPN and of RoIAlign (``{"0": layer3}``).

    The ResNet is built with ``out_indices=(3,)``, so its own forward stops after layer3 and layer4 runs
    only in the box head. The attribute is named ``body`` as in `BackboneWithFPN`, so both detectors keep
    the ResNet under ``backbone.body.``.

    Args:
        backbone: a ``backbones.ResNet`` with ``out_indices=(3,)`` and ``output_stride=32``.
    """

    def __init__(self, backbone: ResNet):
        super().__init__()
        if not isinstance(backbone, ResNet):
            raise ValueError(
                f"the C4 head runs the backbone's layer4: expected a ResNet, got {type(backbone)}"
            )
        if tuple(backbone.out_indices) != (C4_LEVEL,):
            raise ValueError(
                "the C4 trunk ends at layer3: build the ResNet with out_indices=(3,), "
                f"got {backbone.out_indices}"
            )
        strides = [info.stride for info in backbone.all_feature_info]
        if len(strides) != 5:
            raise ValueError(f"the C4 head is layer4: the ResNet has {len(strides) - 1} stages, it needs 4")
        if strides[4] != 2 * strides[3]:
            raise ValueError(
                "the C4 head needs layer4 to halve the RoIs (stride 2): build the ResNet with "
                "output_stride=32"
            )
        self.body = backbone
        self.out_channels = backbone.feature_info.channels[0]  # read by FasterRCNN for its RPNHead

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        (layer3,) = self.body(x).values()
        return OrderedDict([("0", layer3)])


class Res5BoxHead(nn.Module):
    """The backbone's layer4 on RoI features, then global average pooling: ``(R, C, S, S) -> (R, C')``.

    It holds the ResNet as a plain attribute, not as a registered submodule: the ResNet is registered once,
    as the detector's ``backbone.body``, so layer4's tensors have one state-dict key each and appear once
    in ``parameters()``, and ``.to()``, ``train()``/``eval()`` (with the ResNet's frozen-stage and
    ``norm_eval`` rules), ``deepcopy`` and Conv+BN folding reach it through the backbone. Registering it in
    both places would write every layer4 tensor twice into checkpoints.

    Args:
        backbone: the ResNet of the `ResNetC4Trunk` of the same detector.
    """

    def __init__(self, backbone: ResNet):
        super().__init__()
        object.__setattr__(self, "_resnet", backbone)  # bypasses nn.Module's registration (see above)
        self.out_channels = backbone.num_features

    @property
    def layer4(self) -> nn.Module:
        """The backbone's layer4 module itself (``backbone.body.layer4`` of the detector)."""
        return self._resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resnet = self._resnet
        frozen = resnet.frozen_stages >= 4
        if resnet.grad_checkpointing and resnet.training and torch.is_grad_enabled() and not frozen:
            # The ResNet's own checkpointing: it keeps BatchNorm statistics from moving twice per step.
            # Worth it here, as layer4 on every sampled RoI is where C4 spends its activation memory.
            x = resnet._checkpointed_level(4, x)
        else:
            x = resnet.forward_level(4, x)  # layer4 and, for pre-activation nets, its final norm
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def extra_repr(self) -> str:
        return "layer4 of backbone.body (its tensors are saved there) + global average pooling"


def build_faster_rcnn_c4(
    backbone: ResNet,
    num_classes: int,
    *,
    anchor_sizes: Sequence[Sequence[int]] = C4_ANCHOR_SIZES,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    roi_output_size: int = 14,
    roi_sampling_ratio: int = 0,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] = (0.485, 0.456, 0.406),
    image_std: Sequence[float] = (0.229, 0.224, 0.225),
    **kwargs,
) -> FasterRCNN:
    """torchvision ``FasterRCNN`` with the C4 layout; defaults are detectron2's ``faster_rcnn_R_50_C4``.

    Args:
        backbone: our ResNet built with ``out_indices=(3,)`` (e.g. ``resnet50(out_indices=(3,))``); its
            layer4 becomes the box head.
        num_classes: classes including background.
        anchor_sizes: one tuple of sizes (the one stride-16 level).
        aspect_ratios: anchor height/width ratios.
        roi_output_size, roi_sampling_ratio: RoIAlign on layer3 (layer4 halves the output size; 0 =
            adaptive sampling, as detectron2).
        min_size, max_size: torchvision's resize (a sequence of min sizes draws one at random in training).
        **kwargs: the ``rpn_*`` and ``box_*`` arguments of ``FasterRCNN``, passed as they are.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
    if len(anchor_sizes) != 1:
        raise ValueError(
            f"C4 has one feature level: give anchor_sizes as one tuple of sizes, got {anchor_sizes}"
        )
    trunk = ResNetC4Trunk(backbone)
    head = Res5BoxHead(backbone)
    anchors = AnchorGenerator(
        (tuple(int(s) for s in anchor_sizes[0]),), (tuple(float(r) for r in aspect_ratios),)
    )
    roi_pool = MultiScaleRoIAlign(["0"], output_size=roi_output_size, sampling_ratio=roi_sampling_ratio)
    return FasterRCNN(
        trunk,
        num_classes=None,  # the predictor below fixes it (torchvision refuses both)
        min_size=tuple(min_size) if isinstance(min_size, Sequence) else min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=head,
        box_predictor=FastRCNNPredictor(head.out_channels, num_classes),
        **kwargs,
    )


def check_head(m) -> None:
    """``model.head`` and the keys that must agree with it (DetectionModelConfig).

    Raises:
        ConfigError: naming the key, its value and what C4 needs.
    """
    check_one_of("model.head", m.head, HEADS)
    if m.head != "c4":
        return
    c4 = "with model.head=c4"
    if list(m.out_indices) != [C4_LEVEL]:
        raise invalid(
            "model.out_indices",
            list(m.out_indices),
            f"{c4} the RPN and RoIAlign read layer3 and layer4 is the box head: set [3] (a C4 "
            "config also sets model.extra_level: none; see configs/detection/faster_rcnn_r18_c4_cpu.yaml)",
        )
    if m.extra_level != "none":
        raise invalid("model.extra_level", m.extra_level, f"{c4} there is no FPN to extend: set none")
    if len(m.anchor_sizes) > 1:
        raise invalid(
            "model.anchor_sizes",
            [list(s) for s in m.anchor_sizes],
            f"{c4} there is one feature level: give one list of sizes, e.g. [[32, 64, 128, 256, 512]]",
        )
    layers = ARCHS.get(m.backbone.arch, ({}, None))[0].get("layers")
    if layers is not None and len(layers) != 4:  # the CIFAR nets have 3 stages and no layer4
        raise invalid(
            "model.backbone.arch", m.backbone.arch, f"{c4} layer4 is the box head: use a 4-stage ResNet"
        )
    if m.backbone.output_stride != 32:
        raise invalid(
            "model.backbone.output_stride",
            m.backbone.output_stride,
            f"{c4} layer4 must keep its stride 2 (it halves the RoIs): set 32",
        )
    if m.detector_weights:
        raise invalid(
            "model.detector_weights",
            m.detector_weights,
            f"{c4} leave it empty: torchvision publishes FPN detectors only; start from "
            "model.backbone.weights (or --weights with a C4 checkpoint of this toolkit)",
        )
