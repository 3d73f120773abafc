"""The interface between the shared Trainer and one task (classification, detection, ...).

A task builds its model and datasets from its config and knows how to compute a loss and how to
evaluate; the Trainer owns everything else (devices, precision, DDP, checkpoints, logging). This is the
detectron2 / Lightning split kept deliberately small: the Trainer calls only the methods of the first part.
The deployment tools (export, quantize, prune, analyze) ask the rest: what the model takes, how it is
exported, how samples are drawn. Their defaults fit a model that maps an image batch to one tensor, so a
task overrides only where its model or data differ, and no tool ever compares task names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler
from torch.utils.data import default_collate as _default_collate

from .config import config_to_dict


@dataclass
class SampleGrid:
    """Pictures for tools/analyze.py's samples.png, in row-major order.

    A picture is a (C, H, W) tensor (any value range: it is stretched for display) or an (H, W, 3) uint8
    array drawn as it is.
    """

    pictures: list[Any]
    titles: list[str]
    columns: int = 4
    row_titles: list[str] = field(default_factory=list)


class Task:
    """Base class of every task; subclasses override the methods the Trainer calls.

    Attributes:
        name: short task name (used for default run folders and logs).
        default_best_metric: key of `evaluate()`'s result used for best.pt when train.best_metric is "".
        best_mode: "max" or "min" for that metric.
        exportable: tools/export.py can export the model alone (`export_recipe` says how).
        predicts_class_logits: the model maps an image batch to class logits (N, classes) and the targets
            are class indices: what INT8 quantization and pruning measure top-1 agreement on.
    """

    name: str = "task"
    config_cls: type | None = None  # the RunConfig subclass of this task (the registry needs it)
    default_best_metric: str = "loss"
    best_mode: str = "min"
    exportable: bool = True
    predicts_class_logits: bool = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def build_model(self, pretrained: bool = True) -> nn.Module:
        """Return the model (on CPU; the Trainer moves it).

        Args:
            pretrained: load the configured backbone (and detector) weights; False when a checkpoint's
                weights are loaded right after, so nothing is read or downloaded for nothing.
        """
        raise NotImplementedError

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """Return (train, val). Validate the data here so that bad input fails before training starts."""
        raise NotImplementedError

    def build_eval_dataset(self) -> Dataset | None:
        """The validation set alone, for --eval-only: override so that it reads no training images.

        The default builds both sets and drops the training one.
        """
        return self.build_datasets()[1]

    def collate_fn(self, batch: list) -> Any:
        """Merge samples into a batch (default: torch's default_collate)."""
        return _default_collate(batch)

    def train_batch_sampler(self, dataset: Dataset, batch_size: int, shuffle_seed: int) -> Sampler | None:
        """Optional custom batch sampler for training (e.g. episodes); None uses the Trainer's sampler.

        A custom sampler should be deterministic given `shuffle_seed` and, if it has one, `set_epoch()`,
        so that mid-epoch resume can skip the batches already consumed.
        """
        return None

    def training_step(self, model: nn.Module, batch: Any, device: Any) -> dict[str, Tensor]:
        """Compute the loss on one batch; the result must contain "loss" (other entries are logged)."""
        raise NotImplementedError

    def evaluate(
        self, model: nn.Module, loader: Any, device: Any, run_dir: Path, epoch: int
    ) -> dict[str, float]:
        """Evaluate on the validation loader (rank 0 only) and return scalar metrics."""
        raise NotImplementedError

    def after_evaluation(self, run_dir: Path, epoch: int, metrics: dict[str, float], is_best: bool) -> None:
        """Called on rank 0 after each evaluation of training, once best.pt's fate is known.

        `is_best` says whether this evaluation becomes best.pt: a task that writes evaluation reports
        (per-case tables, ...) copies them aside here instead of tracking the best metric itself.
        """

    def summary_extras(self, run_dir: Path) -> dict:
        """Task-specific entries merged into the run's summary.json at the end of training (default none)."""
        return {}

    def checkpoint_meta(self) -> dict:
        """What the weights mean, stored in every checkpoint under "task_meta" (JSON-able).

        For example the class names in label order; default none.
        """
        return {}

    def adopt_checkpoint_meta(self, meta: dict, source: str, purpose: str) -> None:
        """Align this task with a checkpoint's `checkpoint_meta()` before any dataset is built.

        Args:
            meta: the checkpoint's "task_meta" ({} for checkpoints that have none).
            source: the checkpoint path, for messages.
            purpose: "resume", "eval" (both need the same meaning: label order of the checkpoint, or an
                error naming what differs), "weights" (initialisation: differences are only logged) or
                "load" (rebuilding the model from the checkpoint alone: take the meta as it is, read no
                data).
        """

    def meta_from_state(self, state: dict) -> dict:
        """`checkpoint_meta()` for a checkpoint that has none, from its tensors and config (older files).

        Default: nothing to say. A task whose head size comes from the data overrides this.
        """
        return {}

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """A saved config dict brought to today's schema (keys that moved); default unchanged."""
        return config

    def model_signature(self) -> dict:
        """What must match for --resume to accept a checkpoint (default: the `model` config section)."""
        model_cfg = getattr(self.cfg, "model", None)
        return config_to_dict(model_cfg) if model_cfg is not None else {}

    # ------------------------------------------------------------------ what the deployment tools ask

    @property
    def input_channels(self) -> int:
        """Channels of the images the model takes: those of the shared backbone section."""
        return self.cfg.model.backbone.in_chans

    def input_size(self) -> tuple[int, int]:
        """(H, W) the model is trained on: the size of random export inputs and of the FLOP count.

        Default: 224 x 224, the ImageNet size ResNets are built for.
        """
        return (224, 224)

    def model_input(self, images: Tensor) -> Any:
        """What the model's forward takes for an image batch (N, C, H, W): the batch itself by default."""
        return images

    def image_and_target(self, sample: Any) -> tuple[Tensor, Any]:
        """One dataset sample as (image (C, H, W), target); default: the first two items of a tuple."""
        return sample[0], sample[1]

    def with_eval_transforms(self, dataset: Dataset) -> Dataset:
        """`dataset` with evaluation-time preprocessing, so calibration and parity inputs look like what
        inference sees. Default: unchanged (a task whose training set augments overrides this)."""
        return dataset

    def export_recipe(self) -> Any:
        """How tools/export.py prepares, traces and checks the model (a `tasks.deploy.recipes` class).

        Default: a network from one image batch to one tensor (dynamic batch axis).
        """
        from tasks.deploy.recipes import ImageBatchExport  # late import: deploy builds on the engine

        return ImageBatchExport()

    def analysis_samples(self, split: str, count: int) -> SampleGrid:
        """Up to `count` samples of the "train" or "val" set as the datasets deliver them (samples.png).

        Evenly spaced over the set (datasets are often sorted by class); each drawn by `sample_tile`.
        """
        dataset = self.build_datasets()[0] if split == "train" else self.build_eval_dataset()
        if dataset is None or len(dataset) == 0:
            return SampleGrid([], [])
        positions = torch.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().long().tolist()
        tiles = [self.sample_tile(dataset, index) for index in positions]
        return SampleGrid([p for p, _ in tiles], [t for _, t in tiles], columns=min(4, len(tiles)))

    def sample_tile(self, dataset: Dataset, index: int) -> tuple[Any, str]:
        """Sample `index` as (picture, title) for samples.png; default: the image and its index."""
        image, _ = self.image_and_target(dataset[index])
        return image, f"#{index}"
