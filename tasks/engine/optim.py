"""Optimizer and learning-rate schedule builders.

Schedules use timm's schedulers stepped per optimizer update (`t_in_epochs=False`): they give linear
warmup + cosine / step / multi-step in one object with warmup measured in updates, and their state is a
plain dict, so a resumed run lands on exactly the same learning rate. Epoch-based settings (step_size,
milestones, warmup_epochs) are converted to updates here, so gradient accumulation and
`max_steps_per_epoch` never change the meaning of a config.
"""

from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from .config import ConfigError, TrainConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step", "multistep", "constant")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov off) or AdamW over trainable parameters; no weight decay on norm and bias.

    timm's `param_groups_weight_decay` puts every 1-D parameter (BN/GN/LN weights and all biases) into a
    zero-decay group, the usual recipe since "Bag of Tricks" (He et al., 2019).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={cfg.optimizer!r}: expected one of {list(OPTIMIZERS)}")
    trainable = nn.ModuleDict({"m": model})
    groups = param_groups_weight_decay(trainable, weight_decay=cfg.weight_decay)
    groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    if not groups:
        raise ConfigError("the model has no trainable parameters (check model.backbone.frozen_stages)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


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
