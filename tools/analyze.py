"""Analyse a checkpoint or a config: per-stage parameters and FLOPs, freezing, the LR schedule, samples.

python tools/analyze.py runs/cls/checkpoints/best.pt --out analysis/
python tools/analyze.py configs/classification/resnet50_finetune.yaml data.root=DIR --out analysis/
python tools/analyze.py configs/detection/faster_rcnn_r18_fpn_cpu.yaml data.root=/data/raccoon/train
python tools/analyze.py configs/fewshot/omniglot_protonet.yaml data.root=DIR --only data

Writes lr_schedule.png (one curve per param group with train.backbone_lr_mult or train.layer_decay) and
samples.png (the dataset as the task's dataset class delivers it) to --out.
A checkpoint's model is rebuilt from the file alone, like every other tool does; a config's model is built
with random weights (nothing is downloaded: the numbers do not depend on the weights), and where its head
is sized by the data (classes, categories), the data must be readable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from backbones.errors import UserError
from backbones.freezing import summary
from tasks.deploy.analysis import (
    backbone_path,
    browse_dataset,
    format_stage_table,
    input_size,
    plot_lr_schedule,
    stage_rows,
    steps_per_epoch,
)
from tasks.deploy.errors import DeployError
from tasks.engine.cli import exits_on_user_error
from tasks.engine.config import ConfigError, apply_overrides, load_config, load_yaml_with_bases
from tasks.engine.loading import load_trained_model
from tasks.engine.optim import per_part_lrs
from tasks.engine.registry import get_task, registered_tasks, task_accepting
from tasks.engine.task import Task

PARTS = ("stages", "freezing", "lr", "data")
CONFIG_SUFFIXES = (".yaml", ".yml")


def _config_task(path: str, overrides: list[str], name: str) -> Task:
    """The task of a YAML config: `name`, or ("auto") the one task whose schema accepts the file."""
    if name == "auto":
        try:
            task_cls = task_accepting(apply_overrides(load_yaml_with_bases(path), overrides), path)
        except ConfigError as err:
            raise DeployError(f"{err}; pass --task") from None
    else:
        task_cls = get_task(name)
    return task_cls(load_config(path, overrides, task_cls.config_cls))


def _untrained_model(task: Task) -> nn.Module:
    """The config's network with random weights; says what to do when its head size needs the data."""
    try:
        return task.build_model(pretrained=False)
    except (UserError, OSError) as err:
        raise DeployError(
            f"{err} (the model's head is sized by the data: set data.root=DIR, or analyse a checkpoint)"
        ) from None


def _print_model_tables(args: argparse.Namespace, task: Task, model: nn.Module) -> None:
    """The stage table (FLOPs at --input-size or the task's training size) and the freezing table."""
    if "stages" in args.only:
        size = input_size(task, args.input_size)
        table = format_stage_table(stage_rows(model, task.model_input(torch.zeros(size))))
        print(f"\nper-stage parameters and FLOPs, input {size}\n{table}")
    if "freezing" in args.only:
        path = backbone_path(model)
        print("\nfreezing\n" + summary(model.get_submodule(path) if path else model))


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="training checkpoint, or task config YAML (any registered task)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides (checkpoints: data.* only)")
    parser.add_argument("--task", default="auto", choices=("auto", *registered_tasks()), help="config only")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="default: from the training data")
    parser.add_argument("--samples", type=int, default=16, help="tiles in samples.png")
    parser.add_argument("--out", default="analysis", help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if Path(args.source).suffix in CONFIG_SUFFIXES:
        task = _config_task(args.source, args.overrides, args.task)
        # The LR plot needs the model only for its param groups (one curve each).
        needs_model = {"stages", "freezing"} & set(args.only) or (
            "lr" in args.only and per_part_lrs(task.cfg.train)
        )
        model = _untrained_model(task) if needs_model else None
    else:
        trained = load_trained_model(args.source, args.overrides)
        task, model = trained.task, trained.model
    print(f"{args.source}: {task.name}")
    if model is not None:
        _print_model_tables(args, task, model)
    if "lr" in args.only:
        steps, how = steps_per_epoch(task, args.steps_per_epoch)
        curves = plot_lr_schedule(task.cfg.train, steps, str(out / "lr_schedule.png"), model=model)
        rates = curves["lr"]
        print(
            f"\nLR schedule: {len(rates)} updates, {steps} per epoch ({how}); "
            f"peak {max(rates):.3g}, last {rates[-1]:.3g} -> {out / 'lr_schedule.png'}"
        )
        for key, group_rates in curves.items():
            if key != "lr":
                print(f"  {key[len('lr/') :]:<18} peak {max(group_rates):.3g}, last {group_rates[-1]:.3g}")
    if "data" in args.only:
        drawn = browse_dataset(task, str(out / "samples.png"), args.samples)
        print(f"\n{drawn} samples -> {out / 'samples.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
