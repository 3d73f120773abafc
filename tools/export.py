"""Export a trained classifier, U-Net or Faster R-CNN to TorchScript and ONNX, then check parity.

python tools/export.py runs/cls/checkpoints/best.pt --out exported/cls
python tools/export.py runs/seg/checkpoints/best.pt data.root=/data/membrane --formats onnx
python tools/export.py runs/det/checkpoints/best.pt --input-size 512 512 --config configs/detection/x.yaml

Parity inputs are real images from the run's validation data (``data.*`` overrides relocate it; --random
uses random tensors instead). Exit code 0: every parity check passed; 1: a check failed; 2: bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from tasks.deploy.errors import DeployError
from tasks.deploy.export import FORMATS, export_task_model
from tasks.deploy.inputs import real_images
from tasks.deploy.loading import TASKS, load_model


def _inputs(args, loaded) -> list[torch.Tensor]:
    cfg, task = loaded.cfg, loaded.task
    channels = getattr(cfg.model, "in_chans", 3)
    if args.random:
        generator = torch.Generator().manual_seed(0)
        size = (
            args.input_size
            or {
                "classification": [cfg.data.image_size] * 2 if task == "classification" else None,
                "segmentation": [256, 256],
                "detection": [cfg.model.min_size[0]] * 2 if task == "detection" else None,
            }[task]
        )
        return [torch.rand(channels, *size, generator=generator) for _ in range(args.num_images)]
    images = real_images(task, cfg, args.num_images)
    if task == "detection":
        size = args.input_size or list(images[0].shape[-2:])
        images = [F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0] for x in images]
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="checkpoint of tools/train_{cls,seg,det}.py (holds its config)")
    parser.add_argument(
        "overrides", nargs="*", help="data.* overrides of the saved config, e.g. data.root=DIR"
    )
    parser.add_argument("--task", default="auto", choices=("auto", *TASKS))
    parser.add_argument("--config", default=None, help="YAML whose model section must match the checkpoint")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--out", default="exported", help="output folder")
    parser.add_argument("--num-images", type=int, default=4, help="real images used for the parity check")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="detector export size")
    parser.add_argument("--random", action="store_true", help="random inputs instead of the run's data")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    try:
        loaded = load_model(args.checkpoint, args.task, args.config, args.overrides)
        inputs = _inputs(args, loaded)
        results = export_task_model(
            loaded.task,
            loaded.model,
            inputs,
            args.out,
            args.formats,
            Path(args.checkpoint).stem,
            args.atol,
            args.rtol,
            loaded.task_meta,
        )
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{loaded.task} model from {args.checkpoint} -> {args.out}/")
    for result in results:
        print(result.line())
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
