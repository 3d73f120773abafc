"""Rebuild a trained model from a training checkpoint (its saved ``config`` + weights) for deployment.

Each task's builder is called exactly as its training tool calls it; the only change is that backbone
weight names are cleared, because the checkpoint already holds the trained weights (and these machines
cannot download anything).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.engine.checkpoint import extract_state_dict, load_checkpoint
from tasks.engine.config import ConfigError, config_from_dict, config_to_dict, load_config

from .errors import DeployError

TASKS = ("classification", "segmentation", "detection")  # what export supports
ALL_TASKS = (*TASKS, "fewshot")


@dataclass
class LoadedModel:
    """A rebuilt model in eval mode and what it was built from."""

    model: nn.Module
    cfg: Any
    task: str
    checkpoint: Path
    task_meta: dict = dataclasses.field(default_factory=dict)  # what the outputs mean (class names, ...)


def config_schema(task: str) -> type:
    """The config dataclass of a task (classification | segmentation | detection | fewshot)."""
    if task == "classification":
        from tasks.classification import ClsConfig

        return ClsConfig
    if task == "segmentation":
        from tasks.segmentation.config import SegRunConfig

        return SegRunConfig
    if task == "detection":
        from tasks.detection.config import DetectionConfig

        return DetectionConfig
    if task == "fewshot":
        from tasks.fewshot.config import FewShotConfig

        return FewShotConfig
    raise DeployError(f"task={task!r}: expected one of {list(TASKS)}")


def detect_task(config: dict, source: str | Path = "<checkpoint>") -> str:
    """Name the task of a config dict: by keys only one task's ``model`` has, else by which schema accepts it.

    Saved (resolved) configs hold every key, so the first test decides; short YAML files are parsed with each
    task's schema (unknown keys are errors there), and the folder name (configs/<task>/) breaks ties.
    """
    model = config.get("model", {}) if isinstance(config, dict) else {}
    if "decoder_channels" in model:
        return "segmentation"
    if "fpn_channels" in model:
        return "detection"
    if "head" in model and "pool" in model:
        return "classification"
    if "method" in model:
        return "fewshot"
    fits = []
    for task in ALL_TASKS:
        try:
            config_from_dict(config_schema(task), config)
            fits.append(task)
        except (ConfigError, TypeError):
            pass
    folder = Path(str(source)).parent.name
    if len(fits) > 1 and folder in fits:
        return folder
    if len(fits) == 1:
        return fits[0]
    raise DeployError(
        f"{source}: cannot tell the task from its config (model keys: {sorted(model)}; fits: {fits}); "
        f"pass --task, one of {list(ALL_TASKS)}"
    )


def _diff(saved: Any, wanted: Any, prefix: str = "model") -> list[str]:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return [
            line
            for key in sorted(set(saved) | set(wanted))
            for line in _diff(saved.get(key, "<missing>"), wanted.get(key, "<missing>"), f"{prefix}.{key}")
        ]
    return [] if saved == wanted else [f"{prefix}: checkpoint={saved!r} config={wanted!r}"]


def _build(task: str, cfg: Any, state: dict[str, torch.Tensor]) -> nn.Module:
    if task == "classification":
        from tasks.classification import build_classifier

        if "head.fc.weight" not in state:
            raise DeployError("classification checkpoint has no head.fc.weight: cannot size the head")
        return build_classifier(
            dataclasses.replace(cfg.model, weights=""), int(state["head.fc.weight"].shape[0])
        )
    if task == "segmentation":
        from tasks.segmentation.model import build_unet

        return build_unet(dataclasses.replace(cfg.model, weights=None))
    from tasks.detection.build import build_detector

    if not cfg.model.category_ids:
        raise DeployError("detection checkpoint config has no model.category_ids: cannot size the head")
    return build_detector(cfg.model, len(cfg.model.category_ids) + 1, load_weights=False)


def _config_dict(task: str, saved: dict) -> dict:
    saved = dict(saved)
    if task == "segmentation":
        # Saved configs went through JSON, which turns the int keys of data.value_map into strings.
        data = dict(saved.get("data", {}))
        data["value_map"] = {int(k): v for k, v in (data.get("value_map") or {}).items()}
        saved["data"] = data
    return saved


def load_model(
    checkpoint: str | Path,
    task: str = "auto",
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    use_ema: bool = True,
) -> LoadedModel:
    """Rebuild the model of a training checkpoint.

    Args:
        checkpoint: ``checkpoints/best.pt`` (or last.pt) of a training run; it must hold ``config``.
        task: classification | segmentation | detection | auto (from the saved config's keys).
        config_path: optional YAML config the user believes matches; its ``model`` section must equal the
            checkpoint's, otherwise the export would describe a different network than the one trained.
        overrides: dotted ``data.*`` overrides for the saved config (e.g. ``data.root=/new/place``).
        use_ema: prefer the EMA weights when the run kept them.

    Raises:
        DeployError: unreadable checkpoint, no config, config mismatch, or weights that do not fit.
    """
    checkpoint = Path(checkpoint)
    try:
        ckpt = load_checkpoint(checkpoint)
    except ValueError as err:
        raise DeployError(str(err)) from None
    if not isinstance(ckpt.get("config"), dict):
        raise DeployError(
            f"{checkpoint}: no 'config' entry; expected a checkpoint written by tools/train_*.py"
        )
    task = detect_task(ckpt["config"], checkpoint) if task == "auto" else task
    if task not in TASKS:
        raise DeployError(f"task={task!r}: deployment supports {list(TASKS)}")
    schema = config_schema(task)
    saved = _config_dict(task, ckpt["config"])
    for item in overrides or []:
        if not item.startswith("data."):
            raise DeployError(
                f"override {item!r}: only data.* keys may change; the model is fixed by the checkpoint"
            )
    try:
        from tasks.engine.config import apply_overrides

        cfg = config_from_dict(schema, apply_overrides(saved, overrides))
    except ConfigError as err:
        raise DeployError(f"{checkpoint}: saved config is not a {task} config: {err}") from None
    if config_path is not None:
        try:
            wanted = load_config(config_path, [], schema)
        except ConfigError as err:
            raise DeployError(f"{config_path}: {err}") from None
        diffs = _diff(config_to_dict(cfg.model), config_to_dict(wanted.model))
        # Backbone weight names only say where training started; they do not change the network.
        diffs = [d for d in diffs if not d.startswith(("model.weights:", "model.detector_weights:"))]
        if diffs:
            raise DeployError(
                f"{config_path} does not match the model of {checkpoint}:\n  " + "\n  ".join(diffs[:20])
            )
    use_ema_weights = use_ema and isinstance(ckpt.get("ema"), dict) and bool(ckpt["ema"])
    state = ckpt["ema"] if use_ema_weights else extract_state_dict(ckpt, checkpoint)
    model = _build(task, cfg, state)
    if ckpt.get("pruned"):
        from .prune import resize_to_state_dict

        resize_to_state_dict(model, state)
    load_strict(model, state, checkpoint)
    return LoadedModel(model.eval(), cfg, task, checkpoint, dict(ckpt.get("task_meta") or {}))


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error that lists the missing / mis-shaped tensors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"missing: {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected: {unexpected[:5]}")
        raise DeployError(
            f"{source}: weights do not fit the model built from its config ({', '.join(parts)})"
        )
    model.load_state_dict(state)


def load_task_config(
    path: str | Path, overrides: list[str] | None = None, task: str = "auto"
) -> tuple[str, Any]:
    """Read a YAML config (``_base_`` + overrides) of any task; returns (task name, typed config)."""
    from tasks.engine.config import apply_overrides, load_yaml_with_bases

    try:
        data = apply_overrides(load_yaml_with_bases(path), overrides)
        task = detect_task(data, path) if task == "auto" else task
        return task, config_from_dict(config_schema(task), data)
    except ConfigError as err:
        raise DeployError(f"{path}: {err}") from None


def build_from_config(task: str, cfg: Any, num_classes: int = 0) -> nn.Module:
    """The task's model as its training tool builds it, with random weights (no download).

    ``num_classes`` sizes the head when the config leaves it to the data (0: the config's value or 2).
    """
    if task == "classification":
        from tasks.classification import build_classifier

        classes = num_classes or cfg.model.num_classes or 2
        return build_classifier(dataclasses.replace(cfg.model, weights=""), classes)
    if task == "segmentation":
        from tasks.segmentation.model import build_unet

        return build_unet(dataclasses.replace(cfg.model, weights=None))
    if task == "detection":
        from tasks.detection.build import build_detector

        model_cfg = dataclasses.replace(cfg.model, weights="", detector_weights="")
        return build_detector(
            model_cfg, num_classes or max(2, len(cfg.model.category_ids) + 1), load_weights=False
        )
    if task == "fewshot":
        from tasks.fewshot.task import build_net_from_config

        return build_net_from_config(
            dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="")), num_classes or 64
        )
    raise DeployError(f"task={task!r}: expected one of {[*TASKS, 'fewshot']}")
