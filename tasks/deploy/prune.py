"""Structured channel pruning with torch-pruning, and reloading a pruned network from its weights.

torch-pruning traces the dependency graph (residual adds, downsample branches, BN after conv) and removes
whole channels, so the layers really shrink. The pruned widths are not expressible in the task configs,
so a pruned checkpoint carries ``pruned: True``; ``tasks.engine.resize.resize_to_state_dict`` rebuilds
the configured network with the layer sizes read from the saved tensors before loading them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import DeployError


def prune_channels(
    model: nn.Module, keep_ratio: float, example_input: torch.Tensor, round_to: int = 8
) -> nn.Module:
    """Return a copy of ``model`` keeping ``keep_ratio`` of the channels of every prunable conv (L2 norm).

    Args:
        model: classifier (ImageClassifier) or bare backbone; its final ``nn.Linear`` outputs are kept.
        keep_ratio: fraction of channels to keep, in (0, 1].
        example_input: an input batch used to trace the dependency graph.
        round_to: channel counts stay multiples of this (SIMD-friendly widths; 1 disables).
    """
    import torch_pruning as tp

    if not 0.0 < keep_ratio <= 1.0:
        raise DeployError(f"keep_ratio={keep_ratio}: must be in (0, 1] (e.g. 0.8 keeps 80% of the channels)")
    model = copy.deepcopy(model).eval()
    if keep_ratio == 1.0:
        return model
    # The classes (head outputs) are not channels to remove.
    ignored = [m for m in model.modules() if isinstance(m, nn.Linear)]
    pruner = tp.pruner.MetaPruner(
        model,
        example_input,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=1.0 - keep_ratio,
        ignored_layers=ignored,
        round_to=round_to if round_to > 1 else None,
    )
    pruner.step()
    return model


def channel_widths(model: nn.Module) -> dict[str, list[int]]:
    """``{conv name: [in_channels, out_channels]}`` of every conv (what pruning changed)."""
    return {n: [m.in_channels, m.out_channels] for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
