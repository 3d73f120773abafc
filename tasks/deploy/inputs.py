"""Real input batches for parity checks and calibration, read through the task's own datasets."""

from __future__ import annotations

from typing import Any

import torch

from .errors import DeployError


def task_datasets(task: str, cfg: Any, split: str):
    """The (train or val) dataset the task's training tool would build, with eval-time transforms."""
    if task == "classification":
        from tasks.classification import ClassificationTask
        from tasks.classification.transforms import build_eval_transform

        train, val = ClassificationTask(cfg).build_datasets()
        dataset = train if split == "train" else val
        if dataset is not None:
            dataset.transform = build_eval_transform(cfg.data)  # calibration sees what inference sees
        return dataset
    if task == "segmentation":
        from tasks.segmentation.task import SegmentationTask

        train, val = SegmentationTask(cfg).build_datasets()
        return train if split == "train" else val
    if task == "fewshot":
        from tasks.fewshot.task import FewShotTask

        train, val = FewShotTask(cfg).build_datasets()
        return train if split == "train" else val
    from tasks.detection.task import DetectionTask

    train, val = DetectionTask(cfg).build_datasets()
    return train if split == "train" else val


def real_images(task: str, cfg: Any, count: int, split: str = "val") -> list[torch.Tensor]:
    """Up to ``count`` input images (C, H, W float tensors) from the run's data, in dataset order."""
    return real_samples(task, cfg, count, split)[0]


def real_samples(task: str, cfg: Any, count: int, split: str = "val") -> tuple[list[torch.Tensor], list[Any]]:
    """Up to ``count`` (image, target) pairs from the run's data, in dataset order, as two lists.

    Falls back from ``val`` to ``train`` when the run had no validation set.

    Raises:
        DeployError: when the data named by the config cannot be read (the message says which key to set).
    """
    try:
        dataset = task_datasets(task, cfg, split)
        if dataset is None and split == "val":
            dataset = task_datasets(task, cfg, "train")
    except (ValueError, OSError) as err:
        raise DeployError(
            f"cannot read the {split} data of this run ({err}); "
            "point data.root=... at the data or pass --random"
        ) from None
    if dataset is None or len(dataset) == 0:
        raise DeployError(f"the {split} set of this run is empty; pass data.root=... or --random")
    images, targets = [], []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        image, target = (sample["image"], sample.get("mask")) if isinstance(sample, dict) else sample[:2]
        images.append(image.float())
        targets.append(target)
    return images, targets
