"""Fine-tune a pruned network with the normal training tools: a Task whose model takes the pruned widths."""

from __future__ import annotations

from pathlib import Path

from tasks.engine.checkpoint import extract_state_dict, load_checkpoint
from tasks.engine.loading import checkpoint_task
from tasks.engine.resize import resize_to_state_dict

from .errors import DeployError


def pruned_task_class(weights: str | Path) -> type:
    """Subclass of the checkpoint's Task whose `build_model` resizes the configured network to its shapes.

    The engine's `--weights` resizes too, but only the first model it loads; building the pruned
    architecture into the task makes `--resume` of the fine-tuning run work as well, because the run's own
    checkpoints have the pruned shapes.

    Raises:
        DeployError: `weights` is not a pruned checkpoint of tools/prune.py.
    """
    checkpoint = load_checkpoint(weights)
    if not checkpoint.get("pruned"):
        raise DeployError(f"{weights}: not a pruned checkpoint of tools/prune.py (no 'pruned' flag)")
    task_cls = checkpoint_task(checkpoint, weights)
    state = extract_state_dict(checkpoint, weights)

    class PrunedTask(task_cls):
        def build_model(self, pretrained: bool = True):
            return resize_to_state_dict(super().build_model(pretrained), state)

    PrunedTask.__name__ = PrunedTask.__qualname__ = f"Pruned{task_cls.__name__}"
    return PrunedTask
