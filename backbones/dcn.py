"""Modulated deformable convolution (DCNv2, Zhu et al. 2019) in chosen ResNet stages.

The kernel is torchvision's ``deform_conv2d`` (with ``mask=``, which makes it v2). torchvision has no
layer that predicts the offsets and the mask from the input, which is what a backbone needs; that layer is
written here after mmcv's ``ModulatedDeformConv2dPack`` (mmdet's ``dcn``/``stage_with_dcn``, detectron2's
``DEFORM_ON_PER_STAGE``): a 3x3 conv ``conv_offset`` with the main conv's stride and dilation predicts
``3*k*k`` channels per offset group, ``2*k*k`` offsets (torchvision's layout: ``(dy, dx)`` per kernel tap)
and ``k*k`` mask logits, and starts at zero.

The main weight keeps the plain conv's key (``layer3.0.conv2.weight``), so torchvision, timm and our own
checkpoints load into a deformable backbone; only ``...conv2.conv_offset.*`` is new, and at zero it makes
the layer the plain conv (offsets 0, mask 1), so a pretrained network starts as it was trained.

mmdet/mmcv DCNv2 checkpoints use the same key names but a ``sigmoid`` mask (half of ours for the same
logits), so their deformable layers do not compute the same function here; their plain tensors do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import register_flop_formula
from torchvision.ops import DeformConv2d, deform_conv2d

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck

# Blocks whose one 3x3 conv is ``conv2``: that conv becomes deformable (mmdet and detectron2 do the same).
DEFORMABLE_BLOCKS = (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)
MAX_LEVEL = 4


class ModulatedDeformConv2d(DeformConv2d):
    """``torchvision.ops.DeformConv2d`` that predicts its own offsets and mask from its input.

    ``forward(x)`` runs ``conv_offset`` on ``x``, splits its output into offsets and mask logits, and
    calls ``torchvision.ops.deform_conv2d`` with the mask ``2 * sigmoid(logits)``. The attributes
    (``weight``, ``bias``, ``stride``, ...) are torchvision's.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as in
            ``nn.Conv2d`` (and ``DeformConv2d``).
        offset_groups: groups of input channels that share one set of offsets and mask (mmcv's
            ``deform_groups``; 1 in mmdet's and detectron2's ResNets).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        offset_groups: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if offset_groups < 1 or in_channels % offset_groups:
            raise ValueError(
                f"offset_groups must be a positive divisor of in_channels={in_channels}, got {offset_groups}"
            )
        self.offset_groups = offset_groups
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.num_offsets = 2 * offset_groups * taps
        self.conv_offset = nn.Conv2d(
            in_channels,
            3 * offset_groups * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.reset_offset()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, offset_groups: int = 1) -> ModulatedDeformConv2d:
        """The deformable twin of ``conv``: same shape, stride, padding, dilation, groups and weights."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                "only convs with numeric zero padding can become deformable, got "
                f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        deformable = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            offset_groups=offset_groups,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            deformable.weight.copy_(conv.weight)
            if conv.bias is not None:
                deformable.bias.copy_(conv.bias)
        deformable.weight.requires_grad_(conv.weight.requires_grad)
        return deformable

    def reset_offset(self) -> None:
        """Zero the offset/mask predictor: offsets 0 and mask 1 everywhere, i.e. the plain convolution."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offset_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The offsets ``(N, 2*g*k*k, H', W')`` and the mask ``(N, g*k*k, H', W')`` for input ``x``."""
        offset, logits = self.conv_offset(x).split(
            [self.num_offsets, self.conv_offset.out_channels - self.num_offsets], dim=1
        )
        # mmcv's (and detectron2's) mask is sigmoid(logits), 0.5 at the zero start: every deformable layer
        # would halve its response, so a pretrained network would not compute what it was trained to at
        # step 0. Twice the sigmoid is exactly 1 there (the plain conv), and training can move each tap's
        # weight down or up from it (range (0, 2)).
        return offset, 2.0 * torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offset_and_mask(x)
        # torchvision's kernels have no bfloat16 version and its autocast rule (float32) exists for CUDA
        # only, so bf16 autocast on a CPU would fail here: compute such inputs in float32 the way that rule
        # does, and hand back the input's dtype to the next layer.
        dtype = torch.promote_types(x.dtype, self.weight.dtype)
        if dtype == torch.bfloat16:
            dtype = torch.float32
        bias = self.bias.to(dtype) if self.bias is not None else None
        out = deform_conv2d(
            x.to(dtype),
            offset.to(dtype),
            self.weight.to(dtype),
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask.to(dtype),
        )
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        )
        for name, plain in (("padding", (0, 0)), ("dilation", (1, 1)), ("groups", 1), ("offset_groups", 1)):
            if getattr(self, name) != plain:
                text += f", {name}={getattr(self, name)}"
        return text + (", bias=False" if self.bias is None else "")

    def __repr__(self) -> str:
        # DeformConv2d writes a one-line repr that would hide conv_offset: nn.Module's shows the children.
        return nn.Module.__repr__(self)


@register_flop_formula(torch.ops.torchvision.deform_conv2d)
def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    """FLOPs of torchvision's ``deform_conv2d`` for ``FlopCounterMode`` (``count_macs``).

    torch has no formula for torchvision's op and would count it as 0; this counts it as the convolution of
    the same shapes (the bilinear sampling is left out, as in mmcv's counter).
    """
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def normalize_dcn_stages(dcn_stages: Sequence[int], levels: Sequence[int]) -> tuple[int, ...]:
    """Check ``dcn_stages`` against the stage levels a network has (k = layerk); returned sorted."""
    allowed = list(levels)
    if isinstance(dcn_stages, int):
        dcn_stages = (dcn_stages,)
    chosen = list(dcn_stages)
    bad = [s for s in chosen if isinstance(s, bool) or not isinstance(s, int) or s not in allowed]
    if bad:
        raise ValueError(
            f"dcn_stages entries must be in {allowed} (k = layerk of this network; the stem cannot be "
            f"deformable), got {bad[0]!r}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"dcn_stages names a level twice: {tuple(chosen)}")
    return tuple(sorted(chosen))


def add_deformable_convs(
    model: nn.Module, dcn_stages: Sequence[int], offset_groups: int = 1
) -> tuple[int, ...]:
    """Replace the 3x3 ``conv2`` of every block of ``layer{k}``, k in ``dcn_stages``, by its deformable twin.

    Runs after the network's weight init (``ResNet`` calls it so) because that init would otherwise draw
    the offset predictors at random: they must start at zero. The plain conv's weights are kept.

    Args:
        model: a ResNet (anything with ``layer1``..``layer4`` of the blocks in :data:`DEFORMABLE_BLOCKS`).
        dcn_stages: stage levels (1..4 = layer1..layer4), e.g. (3, 4); empty converts nothing.
        offset_groups: see :class:`ModulatedDeformConv2d`.

    Returns:
        The converted levels, sorted.
    """
    levels = [level for level in range(1, MAX_LEVEL + 1) if hasattr(model, f"layer{level}")]
    stages = normalize_dcn_stages(dcn_stages, levels)
    for level in stages:
        for index, block in enumerate(getattr(model, f"layer{level}")):
            conv = getattr(block, "conv2", None)
            if not isinstance(block, DEFORMABLE_BLOCKS) or type(conv) is not nn.Conv2d:
                names = ", ".join(b.__name__ for b in DEFORMABLE_BLOCKS)
                raise ValueError(
                    f"dcn_stages={list(stages)}: layer{level}.{index} is a {type(block).__name__}; "
                    f"deformable convs replace the 3x3 conv2 of {names} blocks only"
                )
            if conv.kernel_size != (3, 3):
                raise ValueError(f"dcn_stages: layer{level}.{index}.conv2 is not a 3x3 conv ({conv})")
            block.conv2 = ModulatedDeformConv2d.from_conv(conv, offset_groups=offset_groups)
    return stages


def offset_predictor_keys(model: nn.Module) -> list[str]:
    """State-dict keys of every deformable conv's offset predictor (new layers a plain checkpoint lacks)."""
    return [
        f"{name}.conv_offset.{key}" if name else f"conv_offset.{key}"
        for name, module in model.named_modules()
        if isinstance(module, ModulatedDeformConv2d)
        for key in module.conv_offset.state_dict()
    ]
