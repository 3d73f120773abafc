"""The ResNet family with multi-scale outputs, real stage freezing and torchvision/timm checkpoints.

>>> from backbones import resnet50
>>> backbone = resnet50(out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True)
>>> [(i.name, i.channels, i.stride) for i in backbone.feature_info]
[('layer1', 256, 4), ('layer2', 512, 8), ('layer3', 1024, 16), ('layer4', 2048, 32)]
"""

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .complexity import count_macs, count_parameters
from .deploy import fuse_conv_bn, prepare_for_inference, to_channels_last
from .freezing import convert_frozen_batchnorm, freeze_stage_norms, summary
from .resnet import (
    ARCHS,
    DEPTHS,
    FeatureInfo,
    FeatureInfoList,
    ResNet,
    create_backbone,
    resnet18,
    resnet34,
    resnet50,
    resnet50d,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    seresnet50,
    wide_resnet50_2,
    wide_resnet101_2,
)
from .weights import LoadReport, WeightsUnavailableError, load_pretrained

__all__ = [
    "ARCHS",
    "DEPTHS",
    "BasicBlock",
    "Bottleneck",
    "FeatureInfo",
    "FeatureInfoList",
    "LoadReport",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "WeightsUnavailableError",
    "convert_frozen_batchnorm",
    "count_macs",
    "count_parameters",
    "create_backbone",
    "freeze_stage_norms",
    "fuse_conv_bn",
    "load_pretrained",
    "prepare_for_inference",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet50d",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "seresnet50",
    "summary",
    "to_channels_last",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
