from __future__ import annotations

import pytest
import torch
from torch import nn

from tasks.engine.config import ConfigError, TrainConfig
from tasks.engine.optim import build_optimizer, build_scheduler


def model():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2)
    )


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_no_weight_decay_on_norm_and_bias(name):
    m = model()
    m[0].weight.requires_grad_(False)  # frozen params are left out
    opt = build_optimizer(m, TrainConfig(optimizer=name, weight_decay=0.05))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay == {id(m[4].weight)}
    expected = {id(p) for n, p in m.named_parameters() if p.requires_grad} - decay
    assert no_decay == expected
    assert type(opt).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[name]


def lrs(cfg, steps_per_epoch):
    opt = build_optimizer(model(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for step in range(cfg.epochs * steps_per_epoch):
        sched.step_update(step)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_warmup_then_cosine():
    cfg = TrainConfig(epochs=4, lr=0.4, warmup_epochs=1, scheduler="cosine", warmup_lr_ratio=0.0)
    values = lrs(cfg, 10)
    assert values[0] == pytest.approx(0.0)
    assert values[5] == pytest.approx(0.2)  # linear warmup
    assert values[10] == pytest.approx(0.4)  # peak right after warmup
    import math

    # cosine over the remaining 30 updates, as the closed form
    for k in (15, 25, 39):
        t = k - 10
        assert values[k] == pytest.approx(0.5 * 0.4 * (1 + math.cos(math.pi * t / 30)), rel=1e-6)


@pytest.mark.parametrize("kind", ["step", "multistep"])
def test_step_schedules_match_torch_per_epoch(kind):
    cfg = TrainConfig(epochs=6, lr=0.1, gamma=0.5, scheduler=kind, step_size=2, milestones=[1, 4])
    ours = lrs(cfg, 3)
    opt = torch.optim.SGD(model().parameters(), lr=0.1)
    if kind == "step":
        ref = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    else:
        ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 4], gamma=0.5)
    for epoch in range(6):
        for k in range(3):
            assert ours[epoch * 3 + k] == pytest.approx(opt.param_groups[0]["lr"]), (epoch, k)
        opt.step()  # no gradients: a no-op that keeps torch from warning about the call order
        ref.step()


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="train.optimizer='adam'"):
        build_optimizer(model(), TrainConfig(optimizer="adam"))
    opt = build_optimizer(model(), TrainConfig())
    with pytest.raises(ConfigError, match="train.scheduler='poly'"):
        build_scheduler(opt, TrainConfig(scheduler="poly"), 10)
    with pytest.raises(ConfigError, match="milestones"):
        build_scheduler(opt, TrainConfig(scheduler="multistep", milestones=[]), 10)
