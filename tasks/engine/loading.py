"""The one way back from a training checkpoint to its model: `load_trained_model(path)`.

predict, eval, export, quantize, prune and analyze all go through it. The checkpoint names its task (older
checkpoints: the one task whose config schema accepts the saved config), carries its config and what its
outputs mean (`task_meta`), so the model is rebuilt from the file alone, with no data folder and no
download: backbone weight names only say where training started, the file holds the trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from backbones import prepare_for_inference

from .checkpoint import CHECKPOINT_VERSION, CheckpointError, load_checkpoint
from .config import ConfigError, RunConfig, apply_overrides, config_from_dict
from .registry import get_task, task_accepting
from .task import Task
from .weights import load_weights_into, model_state


@dataclass
class TrainedModel:
    """A model rebuilt from its checkpoint (eval mode) and what it was built from."""

    model: nn.Module
    task: Task  # configured like the run, aligned with the checkpoint's task_meta
    cfg: RunConfig
    checkpoint: Path
    meta: dict  # the checkpoint's task_meta (class names, value map, ...)

    def inference_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """An eval copy for predicting: every Conv+BN pair folded and the weights channels-last (the same
        outputs to float rounding, 1.1-1.3x faster on a CPU; `backbones.prepare_for_inference`). Not for
        fine-tuning: the folded copy has no BatchNorm left to train."""
        return prepare_for_inference(self.model).to(device)


def checkpoint_task(ckpt: dict, source: str | Path) -> type[Task]:
    """The Task class of a checkpoint: its recorded name, else the task whose schema fits its config."""
    recorded = ckpt.get("task")
    if isinstance(recorded, dict) and recorded.get("name"):
        if int(recorded.get("version", 1)) > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{source} was written by a newer version of this toolkit (checkpoint layout "
                f"{recorded['version']}, this code reads up to {CHECKPOINT_VERSION})"
            )
        return get_task(recorded["name"])
    return task_accepting(ckpt["config"], str(source))


def load_trained_model(
    path: str | Path, data_overrides: list[str] | None = None, use_ema: bool = True
) -> TrainedModel:
    """Rebuild the model of a training checkpoint, on CPU, in eval mode.

    Args:
        path: `checkpoints/best.pt` (or last.pt, or a pruned checkpoint) of any training tool.
        data_overrides: dotted `data.*` overrides of the saved config (`data.root=/new/place`); the model
            is fixed by the checkpoint.
        use_ema: the one EMA rule: take the EMA weights when the checkpoint holds them (the run evaluated
            and picked best.pt with them), else the model's.

    Raises:
        CheckpointError: unreadable file, no config, an override outside `data.`, or weights that do not fit.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: no 'config' entry; expected a checkpoint written by a training tool")
    bad = [item for item in data_overrides or [] if not item.startswith("data.")]
    if bad:
        raise CheckpointError(f"overrides {bad}: only data.* keys may change; the checkpoint fixes the model")
    task_cls = checkpoint_task(ckpt, path)
    try:
        saved = task_cls.upgrade_config(ckpt["config"])
        cfg = config_from_dict(task_cls.config_cls, apply_overrides(saved, data_overrides))
    except ConfigError as err:
        raise CheckpointError(f"{path}: its saved config is not a {task_cls.name} config: {err}") from None
    task = task_cls(cfg)
    meta = ckpt.get("task_meta") or task.meta_from_state(model_state(ckpt, path, use_ema))
    task.adopt_checkpoint_meta(meta, str(path), "load")
    model = task.build_model(pretrained=False)
    load_weights_into(model, path, strict=True, use_ema=use_ema, checkpoint=ckpt)
    return TrainedModel(model.eval(), task, cfg, path, meta)
