"""Fine-tune a pruned network with the normal training tools: a Task whose model takes the pruned widths."""

from __future__ import annotations

from pathlib import Path

from tasks.engine.checkpoint import extract_state_dict, load_checkpoint

from .errors import DeployError
from .prune import resize_to_state_dict


def pruned_task_class(task_cls: type, weights: str | Path) -> type:
    """Subclass of ``task_cls`` whose ``build_model`` resizes the configured network to ``weights``' shapes.

    The engine's ``--weights`` skips tensors whose shape differs from the configured model, which would
    silently drop every pruned layer; building the pruned architecture first makes them all load. The same
    class works for ``--resume``, because the run's own checkpoints have the pruned shapes too.
    """
    try:
        checkpoint = load_checkpoint(weights)
    except ValueError as err:
        raise DeployError(str(err)) from None
    if not checkpoint.get("pruned"):
        raise DeployError(f"{weights}: not a pruned checkpoint of tools/prune.py (no 'pruned' flag)")
    state = extract_state_dict(checkpoint, weights)

    class PrunedTask(task_cls):
        def build_model(self):
            return resize_to_state_dict(super().build_model(), state)

    PrunedTask.__name__ = PrunedTask.__qualname__ = f"Pruned{task_cls.__name__}"
    return PrunedTask
