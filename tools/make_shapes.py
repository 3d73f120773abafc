"""Generate the synthetic shapes datasets (classification, detection, segmentation, few-shot).

python tools/make_shapes.py runs/shapes_data [--seed 0] [--scale 1.0]
"""

from __future__ import annotations

import argparse

from tasks.shapes import make_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", help="output folder (one sub-folder per task)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of images")
    args = parser.parse_args(argv)
    for task, folder in make_all(args.root, seed=args.seed, scale=args.scale).items():
        print(f"{task:<15} {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
