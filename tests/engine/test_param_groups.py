"""Learning rates per part: train.backbone_lr_mult and train.layer_decay, from the groups to the logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from timm.optim import param_groups_weight_decay
from torch import nn

import backbones
from tasks.deploy.analysis import plot_lr_schedule
from tasks.engine import Trainer
from tasks.engine.checkpoint import CheckpointError
from tasks.engine.config import ConfigError, RunConfig, TrainConfig, config_from_dict, validate_train_config
from tasks.engine.optim import build_optimizer, build_scheduler, lr_record

STAGES = ["stem", "layer1", "layer2", "layer3", "layer4"]


class Classifier(nn.Module):
    """A backbones.ResNet plus a linear head, as the task models hold one."""

    def __init__(self, **backbone) -> None:
        super().__init__()
        self.backbone = backbones.create_backbone("resnet18", out_indices=(4,), **backbone)
        self.head = nn.Linear(512, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)["layer4"].mean((2, 3)))


def groups_by_name(optimizer) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for group in optimizer.param_groups:
        out.setdefault(group["name"], []).append(group)
    return out


def stage_params(model: Classifier, level: int) -> set[int]:
    return {id(p) for m in model.backbone.stage_modules(level) for p in m.parameters()}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_layer_decay_scales_each_stage_as_timm(optimizer):
    model = Classifier()
    opt = build_optimizer(model, TrainConfig(optimizer=optimizer, layer_decay=0.5, weight_decay=0.05))
    groups = groups_by_name(opt)
    assert list(groups) == ["head", *(f"backbone.{s}" for s in STAGES)]  # the head first: `lr` is its lr
    expected = {"head": 1.0, **{f"backbone.{s}": 0.5 ** (5 - level) for level, s in enumerate(STAGES)}}
    assert {name: gs[0]["lr_scale"] for name, gs in groups.items()} == expected
    for level, stage in enumerate(STAGES):
        assert {id(p) for g in groups[f"backbone.{stage}"] for p in g["params"]} == stage_params(model, level)
    assert {id(p) for g in groups["head"] for p in g["params"]} == {id(p) for p in model.head.parameters()}
    # Today's weight-decay rule in every part: 1-D parameters (norms, biases) get none.
    for group in opt.param_groups:
        assert group["lr"] == TrainConfig().lr  # the scheduler applies lr_scale
        assert all((p.ndim <= 1) == (group["weight_decay"] == 0) for p in group["params"])


def test_backbone_lr_mult_and_both_together():
    model = Classifier()
    groups = groups_by_name(build_optimizer(model, TrainConfig(backbone_lr_mult=0.1)))
    assert {name: gs[0]["lr_scale"] for name, gs in groups.items()} == {"head": 1.0, "backbone": 0.1}
    backbone = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for g in groups["backbone"] for p in g["params"]} == backbone
    both = groups_by_name(build_optimizer(model, TrainConfig(backbone_lr_mult=0.1, layer_decay=0.5)))
    assert both["backbone.layer4"][0]["lr_scale"] == pytest.approx(0.05)
    assert both["backbone.stem"][0]["lr_scale"] == pytest.approx(0.1 * 0.5**5)


def test_frozen_parameters_stay_out_of_every_group():
    model = Classifier(frozen_stages=1)  # stem and layer1
    with pytest.warns(UserWarning, match="freezes randomly initialised weights"):
        model.train()
    opt = build_optimizer(model, TrainConfig(layer_decay=0.7))
    assert list(groups_by_name(opt)) == ["head", "backbone.layer2", "backbone.layer3", "backbone.layer4"]
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_default_groups_are_the_earlier_ones():
    """Without per-part settings the groups are timm's weight-decay groups: old checkpoints resume."""
    model = Classifier()
    opt = build_optimizer(model, TrainConfig(weight_decay=0.05))
    earlier = param_groups_weight_decay(nn.ModuleDict({"m": model}), weight_decay=0.05)
    assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [
        [id(p) for p in g["params"]] for g in earlier
    ]
    assert {(g["name"], g["lr_scale"]) for g in opt.param_groups} == {("model", 1.0)}
    assert lr_record(opt) == {"lr": TrainConfig().lr}  # no per-group keys


@pytest.mark.parametrize("scheduler", ["cosine", "cosine_restarts", "step", "multistep", "constant"])
def test_group_lr_is_the_scheduled_lr_times_its_scale(scheduler):
    cfg = TrainConfig(
        epochs=6,
        lr=0.2,
        warmup_epochs=1,
        scheduler=scheduler,
        milestones=[2, 4],
        step_size=2,
        restart_epochs=1,
        layer_decay=0.6,
        backbone_lr_mult=0.5,
        min_lr=1e-4,
    )
    opt = build_optimizer(Classifier(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    ref_sched = build_scheduler(reference, cfg, steps_per_epoch=4)
    for step in range(cfg.epochs * 4):
        sched.step_update(step)
        ref_sched.step_update(step)
        base = reference.param_groups[0]["lr"]
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(base * group["lr_scale"], rel=1e-12), (step, group["name"])
        assert lr_record(opt)["lr"] == base


def test_per_part_settings_need_a_resnet_and_positive_values():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ConfigError, match=r"train.layer_decay=0.7: needs a backbones.ResNet .* Sequential"):
        build_optimizer(plain, TrainConfig(layer_decay=0.7))
    with pytest.raises(ConfigError, match=r"train.backbone_lr_mult=0.1: needs a backbones.ResNet"):
        build_optimizer(plain, TrainConfig(backbone_lr_mult=0.1))
    for key, value in (("backbone_lr_mult", 0.0), ("layer_decay", -0.5), ("layer_decay", float("nan"))):
        with pytest.raises(ConfigError, match=rf"train.{key}={value}: must be a finite number > 0"):
            validate_train_config(TrainConfig(**{key: value}))
    with pytest.raises(ConfigError, match="did you mean 'layer_decay'"):  # BEiT / mmdet's name
        config_from_dict(RunConfig, {"train": {"layer_decay_rate": 0.7}})


def resnet_toy(toy_task_cls):
    """The toy task with a ResNet (small stem: 8x8 inputs reach layer4) under a linear head."""

    class ResNetToy(toy_task_cls):
        def build_model(self):
            return Classifier(in_chans=4, stem_type="small")

        def build_datasets(self):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(24, 4, 8, 8, generator=g)
            y = (x[:, 0].mean((1, 2)) > 0).long()
            return torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:8], y[:8])

    return ResNetToy


def read_records(cfg) -> list[dict]:
    return [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]


def test_trainer_logs_the_lr_of_every_group(toy_task_cls, toy_config, caplog):
    cfg = toy_config(epochs=2, lr=0.1, warmup_epochs=1, layer_decay=0.5, max_steps_per_epoch=2)
    caplog.set_level(logging.INFO, logger="tasks.engine")
    Trainer(cfg, resnet_toy(toy_task_cls)(cfg)).fit()
    records = read_records(cfg)
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 4
    reference = build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), cfg.train, 2)
    for record in steps:
        assert record["lr"] == pytest.approx(reference._get_lr(record["step"] - 1)[0], rel=1e-9)
        assert record["lr/head"] == record["lr"]
        for level, stage in enumerate(STAGES):
            assert record[f"lr/backbone.{stage}"] == pytest.approx(record["lr"] * 0.5 ** (5 - level))
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert all("lr/backbone.layer4" in r for r in epochs)
    assert any("backbone.layer3 " in m and "lr " in m for m in caplog.messages)


def test_resume_takes_the_new_per_part_values(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1, lr=0.1, layer_decay=0.5, max_steps_per_epoch=2, scheduler="constant")
    task_cls = resnet_toy(toy_task_cls)
    Trainer(cfg, task_cls(cfg)).fit()
    cfg.train.epochs, cfg.train.layer_decay = 2, 0.8
    Trainer(cfg, task_cls(cfg), resume="auto").fit()
    last = [r for r in read_records(cfg) if r["kind"] == "step"][-1]
    assert last["lr/backbone.layer4"] == pytest.approx(0.08)
    assert last["lr/backbone.stem"] == pytest.approx(0.1 * 0.8**5)
    cfg.train.epochs, cfg.train.layer_decay = 3, 1.0  # other groups: the checkpoint cannot be resumed
    with pytest.raises(CheckpointError, match="cannot resume"):
        Trainer(cfg, task_cls(cfg), resume="auto").fit()


def test_lr_plot_draws_a_curve_per_group(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.1, layer_decay=0.8)
    curves = plot_lr_schedule(cfg, 5, str(tmp_path / "lr.png"), model=Classifier())
    assert sorted(curves) == sorted(["lr", "lr/head", *(f"lr/backbone.{s}" for s in STAGES)])
    assert curves["lr/backbone.stem"][0] == pytest.approx(0.1 * 0.8**5)
    assert plot_lr_schedule(cfg, 5, str(tmp_path / "base.png")).keys() == {"lr"}  # no model: the base lr
    with Image.open(tmp_path / "lr.png") as image:
        assert image.width >= 300


def test_analyze_tool_prints_each_group(tmp_path, capsys):
    import tools.analyze

    for name in ("ants", "bees"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (24, 24), (40 * i, 100, 0)).save(tmp_path / "data" / name / f"{i}.png")
    config = tmp_path / "cls.yaml"
    config.write_text(f"model:\n  backbone:\n    arch: resnet18\ndata:\n  root: {tmp_path / 'data'}\n")
    args = [str(config), "train.backbone_lr_mult=0.1", "--task", "classification", "--only", "lr"]
    assert tools.analyze.main([*args, "--steps-per-epoch", "3", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "LR schedule: 30 updates" in printed
    assert "backbone " in printed and "head " in printed
    assert (tmp_path / "out" / "lr_schedule.png").is_file()
