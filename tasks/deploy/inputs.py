"""Real input batches for parity checks and calibration, read through the loaded task's own datasets.

The task comes from `load_trained_model`, so it has adopted the checkpoint's task_meta: labels follow the
checkpoint's class order, whatever order the data's folders or annotation file list them in now.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from backbones.errors import UserError
from tasks.engine.task import Task

from .errors import DeployError


def split_dataset(task: Task, split: str) -> Dataset | None:
    """The run's "train" or "val" set as the task builds it, with evaluation-time transforms.

    "val" comes from `build_eval_dataset` (no training image is read); calibration on "train" sees the
    preprocessing inference sees, not the training augmentation.
    """
    dataset = task.build_datasets()[0] if split == "train" else task.build_eval_dataset()
    return None if dataset is None else task.with_eval_transforms(dataset)


def real_images(task: Task, count: int, split: str = "val") -> list[torch.Tensor]:
    """Up to `count` input images (C, H, W float tensors) from the run's data, in dataset order."""
    return real_samples(task, count, split)[0]


def real_samples(task: Task, count: int, split: str = "val") -> tuple[list[torch.Tensor], list[Any]]:
    """Up to `count` (image, target) pairs from the run's data, in dataset order, as two lists.

    Falls back from "val" to "train" when the run had no validation set.

    Raises:
        DeployError: when the data named by the config cannot be read (the message says which key to set).
    """
    try:
        dataset = split_dataset(task, split)
        if dataset is None and split == "val":
            dataset = split_dataset(task, "train")
    except (UserError, OSError) as err:
        raise DeployError(
            f"cannot read the {split} data of this run ({err}); "
            "point data.root=... at the data or pass --random"
        ) from None
    if dataset is None or len(dataset) == 0:
        raise DeployError(f"the {split} set of this run is empty; pass data.root=... or --random")
    images, targets = [], []
    for index in range(min(count, len(dataset))):
        image, target = task.image_and_target(dataset[index])
        images.append(image.float())
        targets.append(target)
    return images, targets
