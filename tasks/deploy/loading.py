"""Checkpoints for the deployment tools: the engine's one loader, and what each tool needs of the task.

Models are rebuilt by `tasks.engine.loading.load_trained_model` (EMA weights when present, pruned widths,
the checkpoint's label order); this module only refuses, before any data is read, a checkpoint whose task
cannot do what the tool does, and checks export's `--config` against the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from tasks.engine.config import ConfigError, load_config
from tasks.engine.loading import TrainedModel, load_trained_model
from tasks.engine.registry import registered_tasks
from tasks.engine.weights import signature_diff

from .errors import DeployError


def _tasks_with(capability: str) -> list[str]:
    """Names of the registered tasks whose class sets the boolean attribute `capability`, for messages."""
    return sorted(name for name, task_cls in registered_tasks().items() if getattr(task_cls, capability))


def require_exportable(trained: TrainedModel) -> None:
    """Refuse a model whose task says it cannot be exported (`Task.exportable`)."""
    if not trained.task.exportable:
        raise DeployError(
            f"{trained.checkpoint} holds a {trained.task.name} model, which cannot be exported on its own; "
            f"tools/export.py exports {_tasks_with('exportable')} models"
        )


def require_classifier(trained: TrainedModel, tool: str) -> None:
    """Refuse a model that does not predict class logits (`Task.predicts_class_logits`)."""
    if not trained.task.predicts_class_logits:
        raise DeployError(
            f"{trained.checkpoint} holds a {trained.task.name} model; {tool} measures top-1 agreement of "
            f"class logits, which {_tasks_with('predicts_class_logits')} models predict"
        )


def load_classifier(
    path: str | Path, data_overrides: list[str] | None = None, tool: str = "this tool"
) -> TrainedModel:
    """The trained model of a checkpoint whose task predicts class logits (quantize, prune, INT8 rows)."""
    trained = load_trained_model(path, data_overrides)
    require_classifier(trained, tool)
    return trained


def load_exportable(
    path: str | Path, data_overrides: list[str] | None = None, config_path: str | Path | None = None
) -> TrainedModel:
    """The trained model of a checkpoint for tools/export.py.

    Args:
        path: a training (or pruned) checkpoint.
        data_overrides: dotted `data.*` overrides (where the parity images are).
        config_path: a YAML config the user believes matches: its model must be the checkpoint's network,
            otherwise the export would describe another network than the one trained.

    Raises:
        DeployError: a task that cannot be exported, or a config describing another network.
    """
    trained = load_trained_model(path, data_overrides)
    require_exportable(trained)
    if config_path is not None:
        check_config_matches(trained, config_path)
    return trained


def check_config_matches(trained: TrainedModel, config_path: str | Path) -> None:
    """Refuse a YAML config whose model signature differs from the checkpoint's (both through the task).

    The checkpoint's task_meta is adopted by the config's task too: the YAML describes the network, the
    checkpoint says what its outputs mean (so no data is read to count classes). Weight names and
    training-only keys are not part of the signature: they do not change the network.
    """
    task_cls = type(trained.task)
    try:
        wanted = task_cls(load_config(config_path, [], task_cls.config_cls))
    except ConfigError as err:
        raise DeployError(f"{config_path}: {err}") from None
    wanted.adopt_checkpoint_meta(trained.meta, str(trained.checkpoint), "load")
    diffs = signature_diff(trained.task.model_signature(), wanted.model_signature(), "model.")
    if diffs:
        raise DeployError(
            f"{config_path} does not match the model of {trained.checkpoint}:\n  " + "\n  ".join(diffs[:20])
        )
