"""Train or evaluate a U-Net on our backbone.

    python tools/train_seg.py configs/segmentation/unet_r34_membrane.yaml data.root=DIR train.epochs=20
    python tools/train_seg.py CONFIG --eval-only --weights runs/x/checkpoints/best.pt

Same flags as every training tool (--resume, --weights, --eval-only, --output-dir, --device); see
docs/parts/readme_seg.md. The run folder's summary.json gets a "segmentation" key with per-case rows and
per-class means; overlays/ holds image | ground truth | prediction PNGs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tasks.engine.cli import build_parser, run_training_tool  # noqa: E402
from tasks.engine.config import load_config  # noqa: E402
from tasks.segmentation.config import SegRunConfig  # noqa: E402
from tasks.segmentation.task import SegmentationTask, merge_into_run_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    code = run_training_tool(SegmentationTask, SegRunConfig, argv, description=__doc__)
    if code == 0:
        args = build_parser().parse_args(argv)
        overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
        merge_into_run_summary(load_config(args.config, overrides, SegRunConfig).output_dir)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
