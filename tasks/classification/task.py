"""The classification Task: what the shared Trainer needs to fine-tune or train a ResNet classifier."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.engine.config import config_to_dict
from tasks.engine.monitor import progress, use_progress_bars
from tasks.engine.task import Task

from .config import ClsConfig
from .datasets import (
    DataError,
    ImageListDataset,
    Sample,
    check_images,
    csv_samples,
    folder_classes,
    read_csv_list,
    scan_image_folder,
    stratified_split,
)
from .metrics import confusion_matrix, plot_confusion_matrix, precision_recall, topk_accuracy
from .model import build_classifier
from .transforms import build_eval_transform, build_train_transform

log = logging.getLogger("tasks.classification")

FORMATS = ("imagefolder", "csv")


class ClassificationTask(Task):
    """Image classification on ImageFolder trees or CSV lists."""

    name = "classification"
    default_best_metric = "top1"
    best_mode = "max"

    def __init__(self, cfg: ClsConfig) -> None:
        super().__init__(cfg)
        data = cfg.data
        if data.format not in FORMATS:
            raise DataError(f"data.format={data.format!r}: expected one of {list(FORMATS)}")
        self._classes: list[str] | None = None
        self._mixup = None
        if data.mixup_alpha > 0 or data.cutmix_alpha > 0:
            if cfg.train.batch_size % 2:
                raise DataError(f"mixup/cutmix need an even train.batch_size, got {cfg.train.batch_size}")

    # ----------------------------------------------------------------------------------------- data

    def _folders(self) -> tuple[Path, Path | None]:
        data = self.cfg.data
        root = Path(data.root) if data.root else None
        if data.train_dir:
            train = Path(data.train_dir)
        elif root is not None and (root / "train").is_dir():
            train = root / "train"
        elif root is not None:
            train = root
        else:
            raise DataError("set data.root (or data.train_dir) to the image folder")
        val = None
        if data.val_dir:
            val = Path(data.val_dir)
        elif root is not None and train != root and (root / "val").is_dir():
            val = root / "val"
        return train, val

    @property
    def classes(self) -> list[str]:
        """Class names (label order): data.classes, else sorted folder names / CSV labels of train."""
        if self._classes is None:
            data = self.cfg.data
            if data.classes:
                self._classes = list(data.classes)
            elif data.format == "imagefolder":
                self._classes = folder_classes(self._folders()[0])
            else:
                if not data.train_csv:
                    raise DataError("data.format=csv needs data.train_csv")
                self._classes = sorted({label for _, label, _ in read_csv_list(data.train_csv, data.root)})
            if len(set(self._classes)) != len(self._classes):
                raise DataError(f"data.classes has duplicates: {self._classes}")
        return self._classes

    @property
    def num_classes(self) -> int:
        configured = self.cfg.model.num_classes
        if configured and configured != len(self.classes):
            raise DataError(
                f"model.num_classes={configured} but the data has {len(self.classes)} classes {self.classes}"
            )
        return configured or len(self.classes)

    def _samples(self) -> tuple[list[Sample], list[Sample] | None]:
        data = self.cfg.data
        if data.format == "imagefolder":
            train_dir, val_dir = self._folders()
            train, _ = scan_image_folder(train_dir, self.classes)
            val = scan_image_folder(val_dir, self.classes)[0] if val_dir is not None else None
        else:
            train = csv_samples(data.train_csv, self.classes, data.root)
            val = csv_samples(data.val_csv, self.classes, data.root) if data.val_csv else None
        return train, val

    def build_datasets(self) -> tuple[ImageListDataset, ImageListDataset | None]:
        """Scan, split (seeded, stratified) and check the images; errors name the offending file."""
        data = self.cfg.data
        train, val = self._samples()
        split = "given"
        if val is None and data.val_ratio > 0:
            train, val = stratified_split(train, data.val_ratio, data.split_seed)
            split = f"stratified {data.val_ratio:.0%} split, seed {data.split_seed}"
        if data.check_images:
            train = check_images(train, data.skip_corrupt, "the training set")
            if val:
                val = check_images(val, data.skip_corrupt, "the validation set")
        log.info(
            "classes %s | %d train / %d val images (%s)",
            self.classes,
            len(train),
            len(val or []),
            split if val else "no validation",
        )
        train_set = ImageListDataset(train, self.classes, build_train_transform(data))
        val_set = ImageListDataset(val, self.classes, build_eval_transform(data)) if val else None
        return train_set, val_set

    # ---------------------------------------------------------------------------------------- model

    def build_model(self) -> nn.Module:
        return build_classifier(self.cfg.model, self.num_classes)

    def model_signature(self) -> dict:
        """Model config without `weights` (initialisation does not change the network) + class count."""
        signature = config_to_dict(self.cfg.model)
        signature.pop("weights", None)
        signature["num_classes"] = self.num_classes
        return signature

    def _mixup_fn(self):
        data = self.cfg.data
        if self._mixup is None and (data.mixup_alpha > 0 or data.cutmix_alpha > 0):
            from timm.data import Mixup

            self._mixup = Mixup(
                mixup_alpha=data.mixup_alpha,
                cutmix_alpha=data.cutmix_alpha,
                prob=data.mixup_prob,
                label_smoothing=self.cfg.model.label_smoothing,
                num_classes=self.num_classes,
            )
        return self._mixup

    def _inputs(self, images: Tensor, device: torch.device) -> Tensor:
        images = images.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def training_step(self, model: nn.Module, batch, device) -> dict[str, Tensor]:
        images, labels = batch
        images = self._inputs(images, device)
        labels = labels.to(device, non_blocking=True)
        mixup = self._mixup_fn()
        if mixup is not None:
            images, soft = mixup(images, labels)  # timm Mixup folds label smoothing into the soft targets
            logits = model(images)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.model.label_smoothing)
        return {"loss": loss}

    # ----------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def predict(self, model: nn.Module, loader, device) -> tuple[Tensor, Tensor]:
        """Logits and labels of a whole loader (float32, on CPU)."""
        all_logits, all_labels = [], []
        for images, labels in progress(loader, len(loader), "eval", use_progress_bars()):
            all_logits.append(model(self._inputs(images, device)).float().cpu())
            all_labels.append(labels)
        return torch.cat(all_logits), torch.cat(all_labels)

    def evaluate(self, model: nn.Module, loader, device, run_dir: Path, epoch: int) -> dict[str, float]:
        """top1/top5, loss, macro precision/recall; writes predictions/per_class CSVs and the matrix PNG."""
        logits, labels = self.predict(model, loader, device)
        classes = self.classes
        acc = topk_accuracy(logits, labels, (1, 5))
        preds = logits.argmax(1)
        cm = confusion_matrix(preds, labels, len(classes))
        precision, recall = precision_recall(cm)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._write_predictions(run_dir / "predictions.csv", loader.dataset, logits, labels)
        with (run_dir / "per_class.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "support", "precision", "recall"])
            for i, name in enumerate(classes):
                writer.writerow([name, int(cm[i].sum()), f"{precision[i]:.6f}", f"{recall[i]:.6f}"])
        plot_confusion_matrix(cm, classes, run_dir / "confusion_matrix.png", f"epoch {epoch}")
        return {
            "top1": acc[1],
            "top5": acc[5],
            "loss": float(F.cross_entropy(logits, labels)),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
        }

    def _write_predictions(self, path: Path, dataset, logits: Tensor, labels: Tensor) -> None:
        probs = logits.softmax(1)
        confidence, preds = probs.max(1)
        samples = getattr(dataset, "samples", None)
        classes = self.classes
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "prediction", "confidence", "correct"])
            for i in range(len(labels)):
                name = str(samples[i].path) if samples is not None else str(i)
                writer.writerow(
                    [
                        name,
                        classes[int(labels[i])],
                        classes[int(preds[i])],
                        f"{float(confidence[i]):.6f}",
                        int(preds[i] == labels[i]),
                    ]
                )
