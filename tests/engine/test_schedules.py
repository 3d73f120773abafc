"""SGDR warm restarts against torch's CosineAnnealingWarmRestarts, and Nesterov SGD against torch's own."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tasks.engine.config import ConfigError, RunConfig, TrainConfig, config_from_dict, validate_train_config
from tasks.engine.optim import build_optimizer, build_scheduler


def one_param_sgd(lr: float) -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def restart_lrs(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """Our lr at every update of the run."""
    optimizer = one_param_sgd(cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    rates = []
    for step in range(cfg.epochs * steps_per_epoch):
        scheduler.step_update(step)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def torch_restarts(cfg: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = one_param_sgd(cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.restart_epochs, T_mult=cfg.restart_mult, eta_min=cfg.min_lr
    )
    return optimizer, scheduler


@pytest.mark.parametrize(
    "restart_epochs, restart_mult, min_lr, steps_per_epoch",
    [(10, 2, 0.0, 1), (10, 2, 1e-3, 4), (3, 1, 0.0, 2), (2, 3, 1e-4, 3)],
)
def test_restarts_match_torch_epoch_for_epoch(restart_epochs, restart_mult, min_lr, steps_per_epoch):
    cfg = TrainConfig(
        epochs=150,
        lr=0.1,
        scheduler="cosine_restarts",
        restart_epochs=restart_epochs,
        restart_mult=restart_mult,
        min_lr=min_lr,
        warmup_epochs=0,
    )
    ours = restart_lrs(cfg, steps_per_epoch)
    optimizer, reference = torch_restarts(cfg)
    for epoch in range(cfg.epochs):
        expected = optimizer.param_groups[0]["lr"]
        assert ours[epoch * steps_per_epoch] == pytest.approx(expected, abs=1e-9), epoch
        optimizer.step()  # no gradients: a no-op that keeps torch from warning about the call order
        reference.step()


def test_restarts_are_smooth_within_epochs_and_follow_the_warmup():
    """Per update, the lr is torch's at the fractional epoch; a warmup delays every cycle by its length."""
    cfg = TrainConfig(epochs=31, lr=0.1, scheduler="cosine_restarts", warmup_epochs=1, warmup_lr_ratio=0.0)
    ours = restart_lrs(cfg, steps_per_epoch=4)
    assert ours[:4] == pytest.approx([0.0, 0.025, 0.05, 0.075])  # linear warmup over the first epoch
    optimizer, reference = torch_restarts(cfg)
    optimizer.step()
    for update in range(4, len(ours)):
        reference.step((update - 4) / 4)  # torch's documented per-batch use: a fractional epoch
        assert ours[update] == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-9), update
    assert ours[4 + 10 * 4] == pytest.approx(0.1)  # first restart after 10 epochs (+ the warmup)


def test_restart_settings_are_checked():
    for key in ("restart_epochs", "restart_mult"):
        with pytest.raises(ConfigError, match=rf"train.{key}=0: must be >= 1"):
            validate_train_config(TrainConfig(**{key: 0}))
    with pytest.raises(ConfigError, match="did you mean 'restart_epochs'"):  # torch's name
        config_from_dict(RunConfig, {"train": {"T_0": 5}})
    with pytest.raises(ConfigError, match="did you mean 'restart_mult'"):  # timm's name
        config_from_dict(RunConfig, {"train": {"cycle_mul": 2}})


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))


def two_steps(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters after two steps on a fixed batch (the second is where Nesterov differs)."""
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_nesterov_is_torch_sgd_with_nesterov():
    model = small_model()
    cfg = TrainConfig(nesterov=True, momentum=0.9, lr=0.1, weight_decay=0.01)
    ours = build_optimizer(model, cfg)
    assert type(ours) is torch.optim.SGD
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in ours.param_groups)
    # The same parameters in a copy, under torch's own Nesterov SGD with the same weight-decay groups.
    twin, heavy_ball = copy.deepcopy(model), copy.deepcopy(model)
    twin_of = dict(zip((id(p) for p in model.parameters()), twin.parameters()))
    groups = [
        {"params": [twin_of[id(p)] for p in g["params"]], "weight_decay": g["weight_decay"]}
        for g in ours.param_groups
    ]
    reference = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)
    without = build_optimizer(heavy_ball, TrainConfig(momentum=0.9, lr=0.1, weight_decay=0.01))
    mine = two_steps(model, ours)
    # Ours runs torch's fused kernel, which rounds differently from the per-tensor loop: float tolerance.
    torch.testing.assert_close(mine, two_steps(twin, reference))
    assert not all(torch.equal(a, b) for a, b in zip(mine, two_steps(heavy_ball, without)))


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(ConfigError, match="train.nesterov=true: expected train.optimizer=sgd, got 'adamw'"):
        validate_train_config(TrainConfig(nesterov=True, optimizer="adamw"))
    with pytest.raises(ConfigError, match=r"train.nesterov=true: expected train.momentum > 0, got 0.0"):
        validate_train_config(TrainConfig(nesterov=True, momentum=0.0))
    validate_train_config(TrainConfig(nesterov=True))


def test_optimizers_use_the_fused_step_on_cpu():
    for name in ("sgd", "adamw"):
        optimizer = build_optimizer(small_model(), TrainConfig(optimizer=name))
        assert all(group["fused"] for group in optimizer.param_groups), name
