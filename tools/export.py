"""Export a trained model (classifier, U-Net, Faster R-CNN) to TorchScript and ONNX, then check parity.

python tools/export.py runs/cls/checkpoints/best.pt --out exported/cls
python tools/export.py runs/seg/checkpoints/best.pt data.root=/data/membrane --formats onnx
python tools/export.py runs/det/checkpoints/best.pt --input-size 512 512 --config configs/detection/x.yaml

The model is rebuilt from the checkpoint alone (its task, config and weights; EMA weights when it has
them). Parity inputs are real images from the run's validation data (``data.*`` overrides relocate it;
--random uses random tensors instead). Exit code 0: every parity check passed; 1: a check failed; 2: bad
input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tasks.deploy.export import FORMATS, export_trained
from tasks.deploy.inputs import real_images
from tasks.deploy.loading import load_exportable
from tasks.engine.cli import exits_on_user_error
from tasks.engine.task import Task


def _random_images(task: Task, count: int, size: list[int] | None) -> list[torch.Tensor]:
    """`count` random images of `size` (H, W), else of the size the task trains on."""
    generator = torch.Generator().manual_seed(0)
    height, width = size or task.input_size()
    return [torch.rand(task.input_channels, height, width, generator=generator) for _ in range(count)]


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="checkpoint of a training tool (holds its task and config)")
    parser.add_argument(
        "overrides", nargs="*", help="data.* overrides of the saved config, e.g. data.root=DIR"
    )
    parser.add_argument("--config", default=None, help="YAML whose model section must match the checkpoint")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--out", default="exported", help="output folder")
    parser.add_argument("--num-images", type=int, default=4, help="real images used for the parity check")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize parity images to H x W (a detector's fixed export size; default: its first image's)",
    )
    parser.add_argument("--random", action="store_true", help="random inputs instead of the run's data")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    trained = load_exportable(args.checkpoint, args.overrides, args.config)
    if args.random:
        images = _random_images(trained.task, args.num_images, args.input_size)
    else:
        images = real_images(trained.task, args.num_images)
    results = export_trained(
        trained,
        images,
        args.out,
        args.formats,
        Path(args.checkpoint).stem,
        args.atol,
        args.rtol,
        args.input_size,
    )
    print(f"{trained.task.name} model from {args.checkpoint} -> {args.out}/")
    for result in results:
        print(result.line())
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
