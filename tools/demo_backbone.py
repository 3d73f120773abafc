"""Backbone tour: every depth's per-stage table and the feature shapes for one image.

python tools/demo_backbone.py [--size 224] [--frozen-stages 1]
"""

from __future__ import annotations

import argparse

import torch

from backbones import DEPTHS, ResNet, count_macs, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=224, help="image size for the feature shapes")
    parser.add_argument("--frozen-stages", type=int, default=1, help="OpenMMLab frozen_stages to show")
    args = parser.parse_args(argv)
    image = torch.randn(1, 3, args.size, args.size)
    for depth in sorted(DEPTHS):
        model = ResNet(depth, out_indices=(0, 1, 2, 3, 4), frozen_stages=args.frozen_stages)
        model.pretrained_loaded = True  # a tour of the freezing table, not a training run
        model.train()
        with torch.device("meta"):
            macs = count_macs(ResNet(depth, out_indices=(4,)), (1, 3, args.size, args.size))
        print(f"\nResNet-{depth}: {macs / 1e9:.2f} GMACs at {args.size}x{args.size}")
        print(summary(model))
        with torch.no_grad():
            shapes = {name: tuple(f.shape) for name, f in model.eval()(image).items()}
        print("features:", ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
