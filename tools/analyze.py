"""Analyse a config: per-stage parameters and FLOPs, the freezing table, the LR schedule, sample grids.

python tools/analyze.py configs/classification/resnet50_finetune.yaml --out analysis/
python tools/analyze.py configs/detection/faster_rcnn_r18_fpn_cpu.yaml data.root=/data/raccoon/train
python tools/analyze.py configs/fewshot/omniglot_protonet.yaml data.root=DIR --only data

Writes lr_schedule.png and samples.png (the dataset as the task's dataset class delivers it) to --out.
The model is built from the config with random weights (nothing is downloaded); the numbers do not
depend on the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backbones.freezing import summary
from tasks.deploy.analysis import (
    backbone_path,
    browse_dataset,
    default_input_size,
    format_stage_table,
    plot_lr_schedule,
    stage_rows,
    steps_per_epoch,
)
from tasks.deploy.errors import DeployError
from tasks.deploy.loading import build_from_config, load_task_config

PARTS = ("stages", "freezing", "lr", "data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="task config YAML (any of the four tasks)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=DIR")
    parser.add_argument(
        "--task", default="auto", choices=("auto", "classification", "segmentation", "detection", "fewshot")
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="default: from the training data")
    parser.add_argument("--samples", type=int, default=16, help="tiles in samples.png")
    parser.add_argument("--out", default="analysis", help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        task, cfg = load_task_config(args.config, args.overrides, args.task)
        print(f"{args.config}: {task}")
        if {"stages", "freezing"} & set(args.only):
            model = build_from_config(task, cfg)
        if "stages" in args.only:
            size = default_input_size(task, cfg, args.input_size)
            table = format_stage_table(stage_rows(model, size))
            print(f"\nper-stage parameters and FLOPs, input {size}\n{table}")
        if "freezing" in args.only:
            path = backbone_path(model)
            print("\nfreezing\n" + summary(model.get_submodule(path) if path else model))
        if "lr" in args.only:
            steps, how = steps_per_epoch(task, cfg, args.steps_per_epoch)
            rates = plot_lr_schedule(cfg.train, steps, str(out / "lr_schedule.png"))
            print(
                f"\nLR schedule: {len(rates)} updates, {steps} per epoch ({how}); "
                f"peak {max(rates):.3g}, last {rates[-1]:.3g} -> {out / 'lr_schedule.png'}"
            )
        if "data" in args.only:
            drawn = browse_dataset(task, cfg, str(out / "samples.png"), args.samples)
            print(f"\n{drawn} samples -> {out / 'samples.png'}")
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
