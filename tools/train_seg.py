"""Train or evaluate a U-Net on our backbone.

    python tools/train_seg.py configs/segmentation/unet_r34_membrane.yaml data.root=DIR train.epochs=20
    python tools/train_seg.py CONFIG --eval-only --weights runs/x/checkpoints/best.pt

Same flags as every training tool (--resume, --weights, --eval-only, --output-dir, --device); see
README.md. The run folder's summary.json gets a "segmentation" key with per-case rows and
per-class means; overlays/ holds image | ground truth | prediction PNGs.
"""

from __future__ import annotations

from tasks.engine.cli import run_training_tool
from tasks.segmentation.config import SegmentationConfig
from tasks.segmentation.task import SegmentationTask


def main(argv: list[str] | None = None) -> int:
    """Entry point; see `--help` and the Segmentation section of README.md."""
    return run_training_tool(SegmentationTask, SegmentationConfig, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
