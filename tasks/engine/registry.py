"""Every task of the toolkit under the name its checkpoints record.

Each task package registers its Task class with `@register_task` when it is imported; `get_task(name)`
imports the modules listed in TASK_MODULES first, so a tool holding only a checkpoint finds its task.
"""

from __future__ import annotations

import importlib

from .config import ConfigError, config_from_dict
from .task import Task

# The modules of the tasks this toolkit ships (imported on first lookup; each registers its Task class).
TASK_MODULES = (
    "tasks.classification.task",
    "tasks.detection.task",
    "tasks.segmentation.task",
    "tasks.fewshot.task",
)

TASKS: dict[str, type[Task]] = {}


def register_task(task_cls: type[Task]) -> type[Task]:
    """Class decorator: make `task_cls` known under `task_cls.name` (it needs `config_cls` too)."""
    if not getattr(task_cls, "config_cls", None):
        raise TypeError(f"{task_cls.__name__} needs a config_cls attribute (its RunConfig subclass)")
    TASKS[task_cls.name] = task_cls
    return task_cls


def registered_tasks() -> dict[str, type[Task]]:
    """Name -> Task class for every shipped task (and any other registered one)."""
    for module in TASK_MODULES:
        importlib.import_module(module)
    return dict(TASKS)


def get_task(name: str) -> type[Task]:
    """The Task class registered as `name`.

    Raises:
        ConfigError: naming the registered tasks.
    """
    tasks = registered_tasks()
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}: expected one of {sorted(tasks)}")
    return tasks[name]


def task_accepting(config: dict, source: str) -> type[Task]:
    """The one registered task whose config schema accepts `config` (checkpoints that predate "task").

    Each task's `upgrade_config` is applied first: such checkpoints also predate today's key layout.

    Raises:
        ConfigError: when no task, or more than one, accepts it.
    """
    fits = []
    for task_cls in registered_tasks().values():
        try:
            config_from_dict(task_cls.config_cls, task_cls.upgrade_config(config))
        except (ConfigError, TypeError):
            continue
        fits.append(task_cls)
    if len(fits) != 1:
        names = sorted(t.name for t in fits)
        raise ConfigError(f"{source}: its config fits {names or 'no task'}; expected exactly one")
    return fits[0]
