"""Freezing helpers: FrozenBatchNorm conversion and a per-stage summary table."""

from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .resnet import LEVEL_NAMES, ResNet


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by torchvision's ``FrozenBatchNorm2d`` (same statistics).

    torchvision has the layer but no converter (detectron2 has one); the frozen layer is a fixed affine map,
    so it is cheaper than an eval-mode BatchNorm and cannot be switched back to batch statistics.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def freeze_stage_norms(model: ResNet) -> ResNet:
    """Convert the BatchNorms of the frozen stages (``frozen_stages``) to ``FrozenBatchNorm2d``."""
    for level in range(model.frozen_stages + 1):
        if level == 0:
            model.bn1 = convert_frozen_batchnorm(model.bn1)
            if isinstance(model.conv1, nn.Sequential):
                convert_frozen_batchnorm(model.conv1)
        else:
            convert_frozen_batchnorm(getattr(model, f"layer{level}"))
            if level == model.num_stages:  # the last stage owns the pre-activation nets' final BN-ReLU
                convert_frozen_batchnorm(model.final_norm)
    return model


def _norm_mode(modules: list[nn.Module]) -> str:
    norms = [
        m
        for root in modules
        for m in root.modules()
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d))
    ]
    if not norms:
        return "-"
    if all(isinstance(m, FrozenBatchNorm2d) for m in norms):
        return "frozen"
    modes = {"train" if m.training else "eval" for m in norms if not isinstance(m, FrozenBatchNorm2d)}
    return "/".join(sorted(modes))


def stage_rows(model: ResNet) -> list[dict]:
    """One dict per level: name, params, trainable params, BN mode, output channels and stride."""
    rows = []
    for level, info in enumerate(model.all_feature_info):
        modules = model.stage_modules(level)
        params = [p for m in modules for p in m.parameters()]
        rows.append(
            {
                "level": level,
                "name": LEVEL_NAMES[level],
                "params": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
                "bn_mode": _norm_mode(modules),
                "channels": info.channels,
                "stride": info.stride,
                "returned": level in model.out_indices,
            }
        )
    return rows


def summary(model: ResNet) -> str:
    """Per-stage table as text: what is frozen, how BatchNorm behaves now, what each level outputs."""
    header = (
        f"{'level':<6}{'name':<8}{'params':>12}{'trainable':>12}  "
        f"{'BN mode':<11}{'channels':>9}{'stride':>7}  out"
    )
    lines = [header, "-" * len(header)]
    for row in stage_rows(model):
        lines.append(
            f"{row['level']:<6}{row['name']:<8}{row['params']:>12,}{row['trainable']:>12,}  "
            f"{row['bn_mode']:<11}{row['channels']:>9}{row['stride']:>7}  {'yes' if row['returned'] else ''}"
        )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(
        f"total {total:,} parameters, {trainable:,} trainable (frozen_stages={model.frozen_stages}, "
        f"norm_eval={model.norm_eval}, mode={'train' if model.training else 'eval'})"
    )
    return "\n".join(lines)
