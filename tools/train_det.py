"""Train or evaluate FPN Faster R-CNN on COCO-format data.

Examples:
    python tools/train_det.py configs/detection/faster_rcnn_r18_fpn_cpu.yaml data.root=DATA_DIR
    python tools/train_det.py configs/detection/faster_rcnn_r50_fpn_coco.yaml --resume
    python tools/train_det.py CONFIG --eval-only --weights runs/detection/checkpoints/best.pt
    torchrun --nproc_per_node=8 tools/train_det.py configs/detection/faster_rcnn_r50_fpn_coco.yaml
"""

from __future__ import annotations

from tasks.detection.config import DetectionConfig
from tasks.detection.task import DetectionTask
from tasks.engine.cli import run_training_tool


def main(argv: list[str] | None = None) -> int:
    return run_training_tool(
        DetectionTask,
        DetectionConfig,
        argv,
        description="Train/evaluate FPN Faster R-CNN on a COCO-format dataset.",
    )


if __name__ == "__main__":
    raise SystemExit(main())
