"""Few-shot base training: Baseline / Baseline++ (classification on base classes) or ProtoNet (episodes).

    python tools/train_fewshot.py configs/fewshot/omniglot_baseline.yaml train.epochs=5 data.root=DIR
Same flags as every training tool: --resume [PATH|auto], --weights PATH, --eval-only, --output-dir, --device.
"""

from __future__ import annotations

from tasks.engine.cli import run_training_tool
from tasks.fewshot.config import FewShotConfig
from tasks.fewshot.task import FewShotTask


def main(argv: list[str] | None = None) -> int:
    return run_training_tool(FewShotTask, FewShotConfig, argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
