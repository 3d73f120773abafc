"""Train (or evaluate) an image classifier.

python tools/train_cls.py configs/classification/resnet18_imagefolder.yaml data.root=DIR train.epochs=5
python tools/train_cls.py CONFIG --resume auto          # continue output_dir/checkpoints/last.pt
python tools/train_cls.py CONFIG --eval-only --weights runs/.../checkpoints/best.pt
torchrun --nproc_per_node=2 tools/train_cls.py CONFIG   # DDP (gloo on CPU)
"""

from __future__ import annotations

from tasks.classification import ClassificationConfig, ClassificationTask
from tasks.engine import run_training_tool


def main(argv: list[str] | None = None) -> int:
    """Entry point; see `--help` and README.md."""
    return run_training_tool(
        ClassificationTask, ClassificationConfig, argv, description=__doc__.splitlines()[0]
    )


if __name__ == "__main__":
    raise SystemExit(main())
