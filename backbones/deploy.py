"""Inference helpers: Conv+BN folding, channels-last and a compiled (frozen-weight) fast path."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Fold an (eval-mode or frozen) BatchNorm that follows ``conv`` into the conv's weight and bias."""
    eps = norm.eps
    scale = norm.weight / torch.sqrt(norm.running_var + eps)
    shift = norm.bias - norm.running_mean * scale
    conv.weight.data.mul_(scale.reshape(-1, 1, 1, 1))
    bias = conv.bias.data if conv.bias is not None else torch.zeros_like(shift)
    conv.bias = nn.Parameter(bias * scale + shift)


def _pairs(module: nn.Module):
    """(conv, norm, parent, norm_name) pairs where the norm directly follows the conv.

    Pairs are found by torchvision's naming (``convK`` -> ``bnK``, ``conv1`` -> ``bn1`` also when conv1 is
    a deep-stem Sequential) and inside Sequentials (conv then norm). Pre-activation blocks put the norm
    before the conv, so their ``bnK`` does not follow ``convK`` and is left alone.
    """
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (_, first), (name, second) in zip(children, children[1:]):
                if isinstance(first, nn.Conv2d) and isinstance(second, _NORMS):
                    yield first, second, parent, name
        if type(parent).__name__.startswith("PreAct"):
            continue
        for index in range(1, 4):
            conv, norm = getattr(parent, f"conv{index}", None), getattr(parent, f"bn{index}", None)
            if isinstance(conv, nn.Sequential):
                conv = conv[-1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, _NORMS):
                yield conv, norm, parent, f"bn{index}"


def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every Conv+BN pair folded into the conv.

    The folded BatchNorms become ``nn.Identity``; outputs equal the unfused eval model to float rounding.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        for conv, norm, parent, norm_name in list(_pairs(model)):
            _fold(conv, norm)
            setattr(parent, norm_name, nn.Identity())
    return model


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-D weights as NHWC, which oneDNN and cuDNN convolutions run faster on."""
    return model.to(memory_format=torch.channels_last)


def prepare_for_inference(
    model: nn.Module, fuse: bool = True, channels_last: bool = True, compile: bool = False
) -> nn.Module:
    """The fast inference path: an eval copy with folded BN and channels-last weights.

    Feed it inputs converted with ``x.contiguous(memory_format=torch.channels_last)``.

    Args:
        model: any module (a backbone, a classifier, a U-Net); it is copied, not changed.
        fuse: fold every Conv+BN pair (`fuse_conv_bn`).
        channels_last: store 4-D weights as NHWC.
        compile: also ``torch.compile`` the copy with Inductor's freezing, which treats the weights as
            constants and lets oneDNN keep them pre-packed in its blocked layout instead of reordering
            them on every call (ResNet-50 on a 2-core CPU: 1.35x -> 1.75x torchvision's eager speed; see
            docs/benchmarks.md). Call the result under ``torch.no_grad()`` or ``torch.inference_mode()``
            (freezing applies only there); the first call compiles (about 20 s for a ResNet-50 on 2
            cores, needs a C++ compiler), each new input shape compiles again.
    """
    model = fuse_conv_bn(model) if fuse else copy.deepcopy(model).eval()
    if channels_last:
        model = to_channels_last(model)
    return FrozenCompiled(model) if compile else model


class FrozenCompiled(nn.Module):
    """``torch.compile(model)`` called with Inductor's ``freezing`` switched on.

    The switch must be on while the graph compiles, which happens at the first call, not at
    ``torch.compile`` time; ``torch.compile(..., options={"freezing": True})`` measured 1.5x instead of
    1.75x torchvision's eager speed for a ResNet-50 here, so the config is patched around every call
    (which also leaves the user's global Inductor settings alone).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.compiled = torch.compile(model)

    def forward(self, *args, **kwargs):
        from torch._inductor import config  # imported here: `import backbones` should not load Inductor

        with config.patch(freezing=True):
            return self.compiled(*args, **kwargs)
