"""The ResNet family with multi-scale outputs, real stage freezing and torchvision/timm checkpoints.

>>> from backbones import resnet50
>>> backbone = resnet50(out_indices=(1, 2, 3, 4), frozen_stages=1, norm_eval=True)
>>> [(i.name, i.channels, i.stride) for i in backbone.feature_info]
[('layer1', 256, 4), ('layer2', 512, 8), ('layer3', 1024, 16), ('layer4', 2048, 32)]
"""

from .blocks import BasicBlock, Bottle2neck, Bottleneck, PreActBasicBlock, PreActBottleneck, ZeroPadShortcut
from .complexity import count_macs, count_parameters
from .dcn import ModulatedDeformConv2d, add_deformable_convs
from .deploy import fuse_conv_bn, prepare_for_inference, to_channels_last
from .freezing import convert_frozen_batchnorm, freeze_stage_norms, summary
from .resnet import (
    ARCHS,
    DEPTHS,
    FeatureInfo,
    FeatureInfoList,
    ResNet,
    arch_num_levels,
    create_backbone,
    res2net50_26w_4s,
    res2net50_48w_2s,
    res2net101_26w_4s,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet44,
    resnet50,
    resnet50d,
    resnet56,
    resnet101,
    resnet110,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    resnext101_64x4d,
    seresnet50,
    wide_resnet28_10,
    wide_resnet50_2,
    wide_resnet101_2,
)
from .weights import LoadReport, WeightsUnavailableError, load_pretrained

__all__ = [
    "ARCHS",
    "DEPTHS",
    "BasicBlock",
    "Bottle2neck",
    "Bottleneck",
    "FeatureInfo",
    "FeatureInfoList",
    "LoadReport",
    "ModulatedDeformConv2d",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "WeightsUnavailableError",
    "ZeroPadShortcut",
    "add_deformable_convs",
    "arch_num_levels",
    "convert_frozen_batchnorm",
    "count_macs",
    "count_parameters",
    "create_backbone",
    "freeze_stage_norms",
    "fuse_conv_bn",
    "load_pretrained",
    "prepare_for_inference",
    "res2net50_26w_4s",
    "res2net50_48w_2s",
    "res2net101_26w_4s",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet50d",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "seresnet50",
    "summary",
    "to_channels_last",
    "wide_resnet28_10",
    "wide_resnet50_2",
    "wide_resnet101_2",
]
