"""The classification Task: what the shared Trainer needs to fine-tune or train a ResNet classifier."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks.common.backbone import model_signature, upgrade_model_section
from tasks.common.kfold import FoldUnits
from tasks.common.tta import with_tta
from tasks.engine.monitor import progress, use_progress_bars
from tasks.engine.registry import register_task
from tasks.engine.task import Task

from .config import AUGMENT_KEYS, ClassificationConfig
from .data import (
    DataError,
    ImageListDataset,
    Sample,
    check_images,
    csv_samples,
    fold_split,
    folder_classes,
    image_units,
    read_csv_list,
    require_every_class,
    require_two_folder_classes,
    scan_image_folder,
    stratified_split,
)
from .metrics import confusion_matrix, plot_confusion_matrix, precision_recall, topk_accuracy
from .model import build_classifier
from .transforms import build_eval_transform, build_train_transform, eval_crop_size
from .validation import validate_config

log = logging.getLogger("tasks.classification")


@register_task
class ClassificationTask(Task):
    """Image classification on ImageFolder trees or CSV lists."""

    name = "classification"
    config_cls = ClassificationConfig
    default_best_metric = "top1"
    best_mode = "max"
    predicts_class_logits = True

    def __init__(self, cfg: ClassificationConfig) -> None:
        super().__init__(cfg)
        validate_config(cfg)  # every bad value fails here, before data, model or run folder exist
        self._classes: list[str] | None = None
        self._mixup = None

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
        """Class names in label order: a checkpoint's (`adopt_checkpoint_meta`), else the configured ones."""
        if self._classes is None:
            self._classes = self._configured_classes()
        return self._classes

    def _configured_classes(self) -> list[str]:
        """data.classes, else the sorted class folder names / CSV labels of the training data."""
        data = self.cfg.data
        if data.classes:
            return list(data.classes)
        if data.format == "imagefolder":
            train_dir = self._folders()[0]
            found = folder_classes(train_dir)
            require_two_folder_classes(train_dir, found, "data.train_dir" if data.train_dir else "data.root")
            return found
        labels = sorted({label for _, label, _ in read_csv_list(data.train_csv, data.root)})
        if len(labels) < 2:
            raise DataError(
                f"{data.train_csv}: every row has the label {labels[0]!r}, and a classifier needs at least "
                "2 classes (is the label column right?)"
            )
        return labels

    def _classes_origin(self) -> str:
        """Where `_configured_classes` comes from, for messages."""
        data = self.cfg.data
        if data.classes:
            return "data.classes"
        if data.format == "imagefolder":
            return f"the class folders of {self._folders()[0]}"
        return f"the labels of {data.train_csv}"

    @property
    def num_classes(self) -> int:
        configured = self.cfg.model.num_classes
        if configured and configured != len(self.classes):
            raise DataError(
                f"model.num_classes={configured} but the data has {len(self.classes)} classes {self.classes}"
            )
        return configured or len(self.classes)

    # ------------------------------------------------------------------------------ checkpoint meta

    def checkpoint_meta(self) -> dict:
        """The class names in label order: what each output of the head means."""
        return {"classes": list(self.classes)}

    def adopt_checkpoint_meta(self, meta: dict, source: str, purpose: str) -> None:
        """Take the checkpoint's label order for resume/eval (same classes required); log for weights.

        Folder names sort differently on another machine or after a rename, and data.classes may list
        the classes in another order: the head's outputs mean the checkpoint's classes, so its order wins.

        Raises:
            DataError: (resume, eval) the data's classes are not the checkpoint's, naming both lists.
        """
        saved = [str(name) for name in meta.get("classes") or []]
        if not saved:
            return  # a checkpoint from before class lists were stored: nothing to compare with
        if purpose == "load":
            self._classes = saved  # the model is rebuilt from the file alone: no data to compare with
            return
        current = self.classes
        if purpose == "weights":
            self._log_initial_head(saved, current, source)
            return
        if set(saved) != set(current):
            raise DataError(self._class_mismatch(saved, current, source, purpose))
        if saved != current:
            log.warning(
                "%s: label order %s from the checkpoint (%s lists the same classes as %s)",
                source,
                saved,
                self._classes_origin(),
                current,
            )
        self._classes = saved

    def _class_mismatch(self, saved: list[str], current: list[str], source: str, purpose: str) -> str:
        missing = [c for c in saved if c not in current]
        extra = [c for c in current if c not in saved]
        if purpose == "resume":
            fix = (
                "Resume on the data the run was trained on, or start a new run from these weights with "
                "--weights (the head is then re-learnt)"
            )
        else:
            fix = "Evaluate it on data with exactly these classes"
        return (
            f"{source} was trained on the classes {saved} (label order) but {self._classes_origin()} gives "
            f"{current} (missing {missing}, not in the checkpoint {extra}): its outputs would be read as "
            f"the wrong classes. {fix}"
        )

    def _log_initial_head(self, saved: list[str], current: list[str], source: str) -> None:
        """--weights only initialises: say when the loaded head rows stand for other classes."""
        if saved == current:
            return
        if set(saved) == set(current):
            log.warning(
                "%s: its head was trained with the label order %s, this run uses %s: the loaded head rows "
                "start on other classes (set data.classes=%s to keep the checkpoint's order)",
                source,
                saved,
                current,
                saved,
            )
        else:
            log.info("%s was trained on the classes %s; this run fine-tunes on %s", source, saved, current)

    # --------------------------------------------------------------------------------- data sets

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

    def _split(self) -> tuple[list[Sample], list[Sample] | None, str]:
        """(train, val, how val was made) from listing files only: no image is opened here.

        The seeded split depends on the listing alone, so evaluation reproduces training's split without
        reading a training image.
        """
        data = self.cfg.data
        train, val = self._samples()
        if data.num_folds:
            self._require_one_image_set(val)
            train, val = fold_split(train, self._fold_base(), data)
            return train, val, f"fold {data.fold} of {data.num_folds}, stratified, seed {data.split_seed}"
        if val is not None:
            return train, val, "given"
        if data.val_fraction > 0:
            train, val = stratified_split(train, data.val_fraction, data.split_seed)
            return train, val, f"stratified {data.val_fraction:.0%} split, seed {data.split_seed}"
        return train, None, "no validation"

    # -------------------------------------------------------------- cross-validation (train_cv)

    def _fold_base(self) -> Path:
        """What the image ids of splits.json are relative to: the image folder, or the CSV's base."""
        data = self.cfg.data
        if data.format == "imagefolder":
            return self._folders()[0]
        return Path(data.root) if data.root else Path(data.train_csv).parent

    def _require_one_image_set(self, val: list[Sample] | None) -> None:
        """k-fold makes every validation fold from the training images: a given val set has no place."""
        if val is None:
            return
        data = self.cfg.data
        given = "data.val_csv" if data.format == "csv" else f"the val folder {self._folders()[1]}"
        raise DataError(
            f"data.num_folds={data.num_folds}: k-fold cross-validation makes each validation fold from the "
            f"training images, but a validation set is given ({given}). Drop it, or point at one image "
            "folder with data.train_dir=DIR and data.root=''"
        )

    def fold_units(self) -> FoldUnits:
        """The training images with their classes (listing only): tools/train_cv.py's stratified folds."""
        train, val = self._samples()
        self._require_one_image_set(val)
        return image_units(train, self._fold_base())

    def pooled_metrics(self, fold_dirs: Sequence[Path]) -> dict[str, float]:
        """top1 and macro precision/recall over the validation images of all folds together (each image
        once), from each fold's predictions.csv (its latest evaluation: tools/train_cv.py's of best.pt)."""
        index = {name: i for i, name in enumerate(self.classes)}
        labels, preds = [], []
        for run_dir in fold_dirs:
            path = Path(run_dir) / "predictions.csv"
            if not path.is_file():
                raise DataError(f"{path} is missing: evaluate the fold first")
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    labels.append(index[row["label"]])
                    preds.append(index[row["prediction"]])
        label_t, pred_t = torch.tensor(labels), torch.tensor(preds)
        precision, recall = precision_recall(confusion_matrix(pred_t, label_t, len(index)))
        return {
            "top1": float((pred_t == label_t).double().mean()),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
        }

    def build_datasets(self) -> tuple[ImageListDataset, ImageListDataset | None]:
        """Scan, split (seeded, stratified) and check the images; errors name the offending file."""
        data = self.cfg.data
        train, val, split = self._split()
        if data.check_images:
            train = check_images(train, data.skip_corrupt, "the training set")
            if val:
                val = check_images(val, data.skip_corrupt, "the validation set")
        skipped = " after skipping corrupt images (data.skip_corrupt=true)" if data.skip_corrupt else ""
        require_every_class(train, self.classes, "the training set", skipped)
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

    def build_eval_dataset(self) -> ImageListDataset | None:
        """The validation set alone (--eval-only): training images are listed but never decoded."""
        data = self.cfg.data
        _, val, split = self._split()
        if not val:
            return None
        if data.check_images:
            val = check_images(val, data.skip_corrupt, "the validation set")
        log.info("classes %s | %d val images (%s)", self.classes, len(val), split)
        return ImageListDataset(val, self.classes, build_eval_transform(data))

    # ---------------------------------------------------------------------------------------- model

    def build_model(self, pretrained: bool = True) -> nn.Module:
        return build_classifier(self.cfg.model, self.num_classes, load_weights=pretrained)

    def model_signature(self) -> dict:
        """The model section without what only initialises, plus the class count."""
        return {**model_signature(self.cfg.model), "num_classes": self.num_classes}

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Older configs: backbone keys into model.backbone, data.val_ratio renamed data.val_fraction,
        the flat augmentation keys (and the policy string data.augment) into the data.augment section."""
        upgraded = upgrade_model_section(config)
        data = dict(upgraded.get("data") or {})
        if "val_ratio" in data:
            data["val_fraction"] = data.pop("val_ratio")
        augment = data.get("augment", {})
        augment = {"policy": augment} if isinstance(augment, str) else dict(augment)
        augment.update({key: data.pop(key) for key in AUGMENT_KEYS if key in data})
        return {**upgraded, "data": {**data, "augment": augment}}

    def meta_from_state(self, state: dict) -> dict:
        """Older checkpoints stored no class names: numbered classes as many as the head has rows."""
        rows = state.get("head.fc.weight")
        return {"classes": [f"class{i}" for i in range(len(rows))]} if rows is not None else {}

    def _mixup_fn(self):
        aug = self.cfg.data.augment
        if self._mixup is None and (aug.mixup_alpha > 0 or aug.cutmix_alpha > 0):
            from timm.data import Mixup

            self._mixup = Mixup(
                mixup_alpha=aug.mixup_alpha,
                cutmix_alpha=aug.cutmix_alpha,
                prob=aug.mixup_prob,
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

    def tta_model(self, model: nn.Module) -> nn.Module:
        """`model` with eval.tta's views, their softmax probabilities averaged (`model` when it is [])."""
        return with_tta(model, self.cfg.eval.tta, "softmax", dense=False)

    @torch.no_grad()
    def predict(self, model: nn.Module, loader, device) -> tuple[Tensor, Tensor]:
        """Logits and labels of a whole loader (float32, on CPU), with eval.tta's views when it has any.

        Under TTA the logits are log(mean softmax) of the views: their softmax is the averaged probability.
        """
        model = self.tta_model(model)
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

    # ----------------------------------------------------------------------------------- deployment

    def input_size(self) -> tuple[int, int]:
        size = eval_crop_size(self.cfg.data)  # what evaluation and prediction feed the model
        return (size, size)

    def with_eval_transforms(self, dataset: ImageListDataset) -> ImageListDataset:
        """A copy of `dataset` read with the evaluation transform (resize + centre crop, no augmentation)."""
        return ImageListDataset(dataset.samples, dataset.classes, build_eval_transform(self.cfg.data))

    def sample_tile(self, dataset: ImageListDataset, index: int) -> tuple[Tensor, str]:
        """The image titled with its class name."""
        image, label = dataset[index]
        return image, self.classes[label]
