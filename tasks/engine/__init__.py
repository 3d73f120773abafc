"""Shared training engine: typed configs, the Task interface, the Trainer and atomic checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .cli import run_training_tool
from .config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from .task import Task
from .trainer import NonFiniteLossError, Trainer
from .weights import load_weights_into

__all__ = [
    "CheckpointError",
    "ConfigError",
    "NonFiniteLossError",
    "RunConfig",
    "Task",
    "TrainConfig",
    "Trainer",
    "config_from_dict",
    "config_to_dict",
    "load_checkpoint",
    "load_config",
    "load_weights_into",
    "run_training_tool",
    "save_checkpoint",
    "save_config",
]
