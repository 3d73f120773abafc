"""Residual blocks: torchvision's BasicBlock/Bottleneck layout, pre-activation variants and Res2Net.

Attribute names (``conv1``, ``bn1``, ..., ``downsample``, ``se``) follow torchvision and timm so that their
checkpoints load without renaming. Squeeze-excitation, stochastic depth and the Res2Net block come from timm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, SEModule
from timm.models.res2net import Bottle2neck as TimmBottle2neck
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


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut, option A of He et al. 2016 (section 4.2, the CIFAR ResNets).

    Subsamples by taking every ``stride``-th pixel and appends zero channels up to ``out_planes``.
    Written here because neither torchvision nor timm has it (both only offer projections).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(
                f"shortcut='zero_pad' cannot reduce channels ({in_planes} -> {out_planes}); "
                "use shortcut='projection'"
            )
        self.extra_channels = out_planes - in_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's last pair pads dimension 1 (channels) of an (N, C, H, W) tensor: zeros after the input's.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


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


class Bottle2neck(TimmBottle2neck):
    """Res2Net block (Gao et al. 2019): timm's ``Bottle2neck`` behind this package's block signature.

    The 3x3 conv of a bottleneck is split into ``scale`` groups of ``width = floor(planes * base_width / 64)
    * groups`` channels with hierarchical additions; the first block of a stage ("stage" type) average-pools
    the last split instead. timm's module is used as it is, so its attribute names (``convs``, ``bns``,
    ``pool``, ...) and its checkpoints carry over; this subclass only translates the arguments (``groups``
    is timm's ``cardinality``, ``se`` its ``attn_layer``, ``drop_path`` a rate) and adds ``last_norm``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 26,
        dilation: int = 1,
        first_dilation: int | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se: bool = False,
        drop_path: float = 0.0,
        scale: int = 4,
    ) -> None:
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        super().__init__(
            inplanes,
            planes,
            stride=stride,
            downsample=downsample,
            cardinality=groups,
            base_width=base_width,
            scale=scale,
            dilation=dilation,
            first_dilation=first_dilation,
            norm_layer=_channels_only(norm_layer),
            attn_layer=SEModule if se else None,
            drop_path=DropPath(drop_path) if drop_path > 0 else None,
        )
        self.stride = stride

    def last_norm(self) -> nn.Module:
        """The norm whose weight zero-init-last sets to 0 (the block then starts as identity)."""
        return self.bn3


def _channels_only(norm_layer: NormLayer) -> Callable[..., nn.Module]:
    """``norm_layer`` called with the channel count alone.

    timm's blocks pass ``device=``/``dtype=`` factory arguments; this package's ``norm_layer`` contract is
    ``channels -> module`` (FrozenBatchNorm2d and the GroupNorm factory of the configs take no others).
    """

    def build(channels: int, **_factory_kwargs) -> nn.Module:
        return norm_layer(channels)

    return build
