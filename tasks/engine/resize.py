"""Resize a configured network's layers to the tensor shapes of a pruned checkpoint.

Channel pruning (tasks/deploy/prune.py) changes widths that no config can express; a checkpoint marked
`pruned: True` is loaded by first giving each Conv2d / BatchNorm / Linear the saved shape, so the strict
load that follows fits. The engine needs this to resume, evaluate or fine-tune such a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .checkpoint import CheckpointError


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def resize_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize Conv2d / BatchNorm2d / FrozenBatchNorm2d / Linear layers in place to the saved tensor shapes.

    Every other hyper-parameter (kernel, stride, groups, eps, bias presence) is kept from the configured
    layer, so only pruned widths change. Returns ``model``.
    """
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or not hasattr(module, "weight") or module.weight.shape == weight.shape:
            continue
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                weight.shape[1] * module.groups,
                weight.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(weight.shape[0], module.eps, module.momentum, module.affine)
        elif isinstance(module, FrozenBatchNorm2d):
            new = FrozenBatchNorm2d(weight.shape[0], module.eps)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        else:
            raise CheckpointError(
                f"{name} ({type(module).__name__}) has weight {tuple(module.weight.shape)} but the pruned "
                f"checkpoint has {tuple(weight.shape)}; only Conv2d/BatchNorm2d/Linear can be resized"
            )
        _replace(model, name, new)
    return model
