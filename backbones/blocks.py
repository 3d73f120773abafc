"""Residual blocks: torchvision's BasicBlock/Bottleneck layout, plus pre-activation variants.

Attribute names (``conv1``, ``bn1``, ..., ``downsample``, ``se``) follow torchvision and timm so that their
checkpoints load without renaming. Squeeze-excitation and stochastic depth come from timm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import DropPath, SEModule
from torch import nn

NormLayer = Callable[[int], nn.Module]


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3x3 convolution whose padding keeps the spatial size at stride 1 for any dilation."""
    return nn.Conv2d(
        in_planes,
        out_planes,
        3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (a norm layer always follows)."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def make_downsample(
    in_planes: int, out_planes: int, stride: int, norm_layer: NormLayer | None, avg_down: bool
) -> nn.Sequential:
    """Projection shortcut.

    Default: strided 1x1 conv + norm (torchvision keys ``downsample.0/.1``). ``avg_down`` is ResNet-D
    (Bag of Tricks, He et al. 2019): a 2x2 average pool does the striding so the 1x1 conv no longer skips
    three quarters of its input; timm's key layout ``downsample.1/.2`` is kept. ``norm_layer=None`` is for
    pre-activation blocks, whose shortcut sees an already normalised input.
    """
    layers: list[nn.Module] = []
    if avg_down:
        pool = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
        )
        layers += [pool, conv1x1(in_planes, out_planes)]
    else:
        layers.append(conv1x1(in_planes, out_planes, stride))
    if norm_layer is not None:
        layers.append(norm_layer(out_planes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64 (use depth >= 50)")
        first_dilation = first_dilation or dilation
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=first_dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.se = SEModule(planes) if se else None
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride

    def last_norm(self) -> nn.Module:
        """The norm whose weight zero-init-last sets to 0 (the block then starts as identity)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += identity  # in place, as torchvision: one allocation less per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 block with the stride on the 3x3 conv (ResNet v1.5, as torchvision and timm)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        first_dilation = first_dilation or dilation
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, first_dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SEModule(planes * self.expansion) if se else None
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride

    def last_norm(self) -> nn.Module:
        """The norm whose weight zero-init-last sets to 0 (the block then starts as identity)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += identity  # in place, as torchvision: one allocation less per block
        return self.relu(out)


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    Written here rather than taken from timm because timm's ResNetV2 blocks use fused norm-act layers and
    their own downsample modules, which would not follow the ``norm_layer`` callable and the freezing rules
    of this package. The projection shortcut reads the pre-activated input, as in the paper.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("PreActBasicBlock supports only groups=1 and width_per_group=64")
        first_dilation = first_dilation or dilation
        self.bn1 = norm_layer(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=first_dilation)
        self.bn2 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.se = SEModule(planes) if se else None
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride

    def last_norm(self) -> None:
        """Pre-activation blocks end in a conv: there is no last norm to zero."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += identity  # in place: nothing autograd saved is overwritten
        return out


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block (BN-ReLU-conv three times); see :class:`PreActBasicBlock`."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        first_dilation = first_dilation or dilation
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv1x1(inplanes, width)
        self.bn2 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, first_dilation)
        self.bn3 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SEModule(planes * self.expansion) if se else None
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride

    def last_norm(self) -> None:
        """Pre-activation blocks end in a conv: there is no last norm to zero."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(preact)
        out = self.conv1(preact)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        out += identity  # in place: nothing autograd saved is overwritten
        return out
