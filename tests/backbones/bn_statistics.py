"""Shared by the backbone tests that compare two models tensor by tensor."""

from __future__ import annotations

from torch import nn


def randomize_bn(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine parameters (fresh ones are 0/1 everywhere), so that a tensor that
    lands in the wrong place changes the outputs."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model
