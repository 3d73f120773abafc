"""Optimizer, parameter-group and learning-rate schedule builders.

Schedules use timm's schedulers stepped per optimizer update (`t_in_epochs=False`): they give linear
warmup + cosine / cosine with warm restarts / step / multi-step in one object with warmup measured in
updates, and their state is a plain dict, so a resumed run lands on exactly the same learning rate.
Epoch-based settings (step_size, milestones, warmup_epochs, restart_epochs) are converted to updates here,
so gradient accumulation and `max_steps_per_epoch` never change the meaning of a config.

Learning rates per part (`backbone_lr_mult`, `layer_decay`) follow timm's convention: every param group
holds the base lr plus an `lr_scale`, and timm's schedulers set each group's lr to the scheduled value
times its `lr_scale` at every update.
"""

from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from backbones import ResNet

from .config import ConfigError, TrainConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "cosine_restarts", "step", "multistep", "constant")
# Levels 0..4 of backbones.ResNet (`ResNet.stage_modules`); the stem is conv1 (all deep-stem convs) and bn1.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
HEAD = "head"  # every parameter outside the backbone: classifier, decoder, FPN, RPN, ROI heads


def per_part_lrs(cfg: TrainConfig) -> bool:
    """Whether the config gives parts of the model learning rates of their own."""
    return cfg.backbone_lr_mult != 1 or cfg.layer_decay != 1


def _find_backbone(model: nn.Module, cfg: TrainConfig) -> ResNet:
    """The outermost `backbones.ResNet` inside `model`; a ConfigError naming the per-part key if none."""
    backbone = next((m for m in model.modules() if isinstance(m, ResNet)), None)
    if backbone is None:
        key, value = (
            ("backbone_lr_mult", cfg.backbone_lr_mult)
            if cfg.backbone_lr_mult != 1
            else ("layer_decay", cfg.layer_decay)
        )
        raise ConfigError(
            f"train.{key}={value}: needs a backbones.ResNet inside the model, and "
            f"{type(model).__name__} has none (expected train.{key}=1.0 for this model)"
        )
    return backbone


def lr_parts(model: nn.Module, cfg: TrainConfig) -> list[tuple[str, float, set[int]]]:
    """(group name, lr scale, ids of its parameters) of every part that gets its own learning rate.

    Without per-part settings the whole model is one part, "model". Otherwise the head comes first (so
    `param_groups[0]` keeps the base lr), then the backbone: one part "backbone" at `backbone_lr_mult`, or
    with `layer_decay` one part per stage, scaled as timm's `param_groups_layer_decay` does for 6 layers
    (stem, layer1..4, head): layer4 by decay, layer3 by decay^2, ..., the stem by decay^5.

    timm's `param_groups_layer_decay` itself does not fit: it needs a `group_matcher()` on the model
    (our models are classifiers, torchvision detectors and U-Nets holding a ResNet at different paths),
    cannot combine with a backbone multiplier, and returns unnamed groups.
    """
    if not per_part_lrs(cfg):
        return [("model", 1.0, {id(p) for p in model.parameters()})]
    backbone = _find_backbone(model, cfg)
    levels = STAGES[: backbone.num_levels]  # a 3-stage CIFAR net has no layer4
    stages = [
        (
            f"backbone.{stage}",
            cfg.backbone_lr_mult * cfg.layer_decay ** (len(levels) - level),
            {id(p) for module in backbone.stage_modules(level) for p in module.parameters()},
        )
        for level, stage in enumerate(levels)
    ]
    in_backbone = set().union(*(ids for _, _, ids in stages))
    if cfg.layer_decay == 1:
        stages = [("backbone", cfg.backbone_lr_mult, in_backbone)]
    head = {id(p) for p in model.parameters()} - in_backbone  # also a ResNet's own `fc` classifier
    return [(HEAD, 1.0, head), *stages]


def build_param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Param groups of the trainable parameters: per part (`lr_parts`), then with and without weight decay.

    timm's `param_groups_weight_decay` puts every 1-D parameter (BN/GN/LN weights and all biases) into a
    zero-decay group, the usual recipe since "Bag of Tricks" (He et al., 2019), and leaves frozen
    parameters (requires_grad=False) out. Each group gets a `name` and an `lr_scale`; its `lr` is the
    base lr, which the scheduler scales. Without per-part settings the groups are exactly timm's, so
    checkpoints of earlier runs still resume.
    """
    by_decay = param_groups_weight_decay(nn.ModuleDict({"m": model}), weight_decay=cfg.weight_decay)
    groups = []
    for name, scale, ids in lr_parts(model, cfg):
        for group in by_decay:
            params = [p for p in group["params"] if id(p) in ids]
            if params:
                groups.append({**group, "params": params, "name": name, "lr_scale": scale})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov with `cfg.nesterov`) or AdamW over `build_param_groups(model, cfg)`."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={cfg.optimizer!r}: expected one of {list(OPTIMIZERS)}")
    groups = build_param_groups(model, cfg)
    if not groups:
        raise ConfigError("the model has no trainable parameters (check model.backbone.frozen_stages)")
    fused = can_fuse([p for group in groups for p in group["params"]])
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)


def can_fuse(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused (one kernel for all parameters) optimizer step applies to ``params``.

    torch leaves it off by default; on a CPU it makes a U-Net training step 1.17x faster with AdamW and
    1.06x with SGD (docs/benchmark_notes.md). It needs floating-point parameters on one CPU or CUDA device.
    """
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def lr_record(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rates to log: `lr` (the scheduled base lr) and `lr/<group name>` per named part.

    Per-group keys appear only when the groups have more than one name (per-part settings). The base lr
    is group 0's lr without its scale: group 0 is the head (scale 1) whenever the head trains.
    """
    groups = optimizer.param_groups
    record = {"lr": groups[0]["lr"] / groups[0].get("lr_scale", 1.0)}
    if len({g.get("name") for g in groups}) > 1:
        record.update({f"lr/{g['name']}": g["lr"] for g in groups})
    return record


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Scheduler:
    """Per-update timm scheduler for `cfg.scheduler` with linear warmup over `cfg.warmup_epochs`."""
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(f"train.scheduler={cfg.scheduler!r}: expected one of {list(SCHEDULERS)}")
    steps_per_epoch = max(1, steps_per_epoch)
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    common = dict(
        warmup_t=warmup,
        warmup_lr_init=cfg.lr * cfg.warmup_lr_ratio,
        t_in_epochs=False,
    )
    if cfg.scheduler == "cosine":
        return CosineLRScheduler(
            optimizer, t_initial=max(1, total - warmup), lr_min=cfg.min_lr, warmup_prefix=True, **common
        )
    if cfg.scheduler == "cosine_restarts":
        # SGDR (Loshchilov & Hutter, 2017) as torch's CosineAnnealingWarmRestarts(T_0, T_mult): cycles of
        # restart_epochs, each restart_mult times longer than the one before, after the warmup. A cycle
        # lasts at least one update, so `total` cycles never run out.
        return CosineLRScheduler(
            optimizer,
            t_initial=cfg.restart_epochs * steps_per_epoch,
            lr_min=cfg.min_lr,
            cycle_mul=cfg.restart_mult,
            cycle_limit=total,
            warmup_prefix=True,
            **common,
        )
    if cfg.scheduler == "step":
        if cfg.step_size <= 0:
            raise ConfigError(f"train.step_size={cfg.step_size}: must be a positive number of epochs")
        return StepLRScheduler(
            optimizer,
            decay_t=cfg.step_size * steps_per_epoch,
            decay_rate=cfg.gamma,
            warmup_prefix=False,
            **common,
        )
    if cfg.scheduler == "multistep":
        if not cfg.milestones or sorted(cfg.milestones) != list(cfg.milestones):
            raise ConfigError(f"train.milestones={cfg.milestones}: need increasing epochs for multistep")
        # timm applies milestone m at update m - 1 (kept for compatibility, see timm #2745); +1 makes
        # the decay start exactly at the first update of epoch `milestone`, as torch's MultiStepLR does.
        return MultiStepLRScheduler(
            optimizer,
            decay_t=[m * steps_per_epoch + 1 for m in cfg.milestones],
            decay_rate=cfg.gamma,
            warmup_prefix=False,
            **common,
        )
    # constant: a step schedule that never decays (keeps the warmup behaviour).
    return StepLRScheduler(optimizer, decay_t=total + 1, decay_rate=1.0, warmup_prefix=False, **common)
