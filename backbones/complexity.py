"""Parameter and multiply-accumulate counts, measured with PyTorch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, int, int, int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2, as the classic ResNet table counts them)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device  # works on the meta device: counting needs no real compute
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = model(torch.zeros(input_size, device=device))
        if hasattr(model, "forward_head") and getattr(model, "fc", None) is not None:
            model.forward_head(list(output.values())[-1])
    model.train(was_training)
    return counter.get_total_flops() // 2
