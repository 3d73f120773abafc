"""Predicting with the folds of a cross-validation: one model whose probabilities are the folds' mean.

The predict tools take a checkpoint file or the output folder of `tools/train_cv.py`; for the folder they
load every fold's `checkpoints/best.pt` (`load_trained_models`) and run `ProbabilityEnsemble`, which
averages the members' softmax (or sigmoid) probabilities, as nnU-Net ensembles its folds, and hands the
mean on as logits, so that everything after the model (argmax, thresholds, confidence columns, sliding
windows, test-time augmentation) works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from tasks.common.kfold import read_splits
from tasks.common.tta import ACTIVATIONS, mean_probability_logits

from .checkpoint import CheckpointError
from .crossval import SPLITS_FILE, fold_dir
from .loading import TrainedModel, load_trained_model


class ProbabilityEnsemble(nn.Module):
    """Members run on the same input; returns logits whose softmax (sigmoid) is the members' mean
    softmax (sigmoid) probability (`tasks.common.tta.mean_probability_logits`).

    Args:
        members: models mapping the same input to logits of the same shape (classes on dim 1).
        activation: ``softmax`` (one class per image / pixel) or ``sigmoid`` (independent channels).
    """

    def __init__(self, members: Sequence[nn.Module], activation: str = "softmax") -> None:
        super().__init__()
        if not members:
            raise ValueError("ProbabilityEnsemble needs at least one member")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.members = nn.ModuleList(members)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return mean_probability_logits([member(x) for member in self.members], self.activation)


def fold_checkpoints(path: str | Path) -> list[Path]:
    """`[path]` for a checkpoint file; every fold's checkpoints/best.pt for a tools/train_cv.py folder.

    Raises:
        CheckpointError: a folder without splits.json, or a fold without best.pt.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    if not (path / SPLITS_FILE).is_file():
        raise CheckpointError(
            f"{path} is a folder without {SPLITS_FILE}: expected a checkpoint file (checkpoints/best.pt) "
            "or the output folder of tools/train_cv.py"
        )
    folds = range(read_splits(path / SPLITS_FILE).num_folds)
    checkpoints = [fold_dir(path, i) / "checkpoints" / "best.pt" for i in folds]
    missing = [i for i, checkpoint in zip(folds, checkpoints) if not checkpoint.is_file()]
    if missing:
        raise CheckpointError(
            f"{path}: fold(s) {missing} have no checkpoints/best.pt yet; finish the cross-validation first "
            "(run tools/train_cv.py again: finished folds are skipped)"
        )
    return checkpoints


def load_trained_models(path: str | Path) -> list[TrainedModel]:
    """The model of a checkpoint, or of every fold of a tools/train_cv.py folder (`fold_checkpoints`).

    Raises:
        CheckpointError: see `fold_checkpoints`, or folds whose outputs mean different things (their
            task or its checkpoint meta, such as the class order, differ).
    """
    members = [load_trained_model(checkpoint) for checkpoint in fold_checkpoints(path)]
    first = members[0]
    for member in members[1:]:
        if member.task.name != first.task.name or member.meta != first.meta:
            raise CheckpointError(
                f"{member.checkpoint} and {first.checkpoint} cannot be averaged: their outputs mean "
                f"different things ({member.task.name} {member.meta} vs {first.task.name} {first.meta})"
            )
    return members


def inference_ensemble(
    members: Sequence[TrainedModel], device: str | torch.device = "cpu", activation: str = "softmax"
) -> nn.Module:
    """The inference copy (`TrainedModel.inference_model`) of one member, or the `ProbabilityEnsemble`
    of every member's."""
    models = [member.inference_model(device) for member in members]
    return models[0] if len(models) == 1 else ProbabilityEnsemble(models, activation).eval()
