"""The segmentation Task: what the shared Trainer calls (datasets, loss step, per-case evaluation)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.common.backbone import model_signature, upgrade_model_section
from tasks.common.kfold import FoldUnits
from tasks.common.tta import with_tta
from tasks.engine.registry import register_task
from tasks.engine.run_folder import json_safe
from tasks.engine.task import Task

from .classes import align_spec, spec_meta
from .config import SegmentationConfig
from .data import (
    SegmentationDataset,
    case_units,
    discover_pairs,
    pad_collate,
    pairs_to_records,
    partition_by_case,
    resolve_spec,
    validate_mask_values,
    validation_cases,
)
from .image_io import SegmentationDataError
from .inference import labels_to_region_targets, logits_to_channels, logits_to_labels, predict_logits
from .manifest import DatasetSpec
from .metrics import CaseMetricAccumulator, case_means
from .model import build_unet, output_channels
from .overlay import blend, save_overlay, to_display
from .smp_parts import build_loss
from .transforms import IGNORE_INDEX, build_train_transform
from .validation import validate_config

SEG_SUMMARY = "seg_summary.json"  # per-case rows + class means of the latest evaluation
SEG_SUMMARY_BEST = "seg_summary_best.json"  # the same for the evaluation with the best dice_mean


def make_targets(mask: torch.Tensor, mode: str, regions) -> torch.Tensor:
    """Class-index masks (N, H, W) -> the loss target of ``mode`` (ignore pixels stay IGNORE_INDEX)."""
    if mode == "multiclass":
        return mask
    if mode == "binary":
        target = (mask == 1).float()
        target[mask == IGNORE_INDEX] = float(IGNORE_INDEX)
        return target[:, None]
    return labels_to_region_targets(mask, regions, IGNORE_INDEX)


@register_task
class SegmentationTask(Task):
    """U-Net segmentation on our backbone; metrics per class, image and case (see metrics.py)."""

    name = "segmentation"
    config_cls = SegmentationConfig
    default_best_metric = "dice_mean"
    best_mode = "max"

    def __init__(self, cfg: SegmentationConfig) -> None:
        super().__init__(cfg)
        m = cfg.model
        self.out_channels = output_channels(m.mode, m.num_classes, m.regions)  # validates mode/regions early
        validate_config(cfg)
        self.spec: DatasetSpec | None = None
        self._checkpoint: tuple[dict, str, str] | None = None
        self._best_dice = -math.inf
        loss = cfg.loss
        self.loss_fn = build_loss(
            m.mode, loss.name, IGNORE_INDEX, loss.dice_weight, loss.ce_weight, loss.focal_gamma
        )

    def model_signature(self) -> dict:
        """What --resume and --eval-only must match: the model section without what only initialises."""
        return model_signature(self.cfg.model)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Older configs: backbone keys into model.backbone, the top-level aug section into data.augment."""
        upgraded = upgrade_model_section(config)
        if "aug" in upgraded:
            augment = upgraded.pop("aug")
            upgraded["data"] = {**(upgraded.get("data") or {}), "augment": augment}
        return upgraded

    # ------------------------------------------------------------------------------------------ build
    def build_model(self, pretrained: bool = True) -> nn.Module:
        return build_unet(self.cfg.model, load_weights=pretrained)

    def checkpoint_meta(self) -> dict:
        """The class names by index and the mask value map: what each output channel of the weights means."""
        return spec_meta(self.dataset_spec())

    def adopt_checkpoint_meta(self, meta: dict, source: str, purpose: str) -> None:
        """Use the checkpoint's class order for resume/eval (see `classes.align_spec`)."""
        if not meta:
            return  # a checkpoint from before classes were recorded: nothing to compare
        self._checkpoint = (meta, source, "eval" if purpose == "load" else purpose)
        self.spec = None
        if purpose != "load":  # rebuilding from the file alone needs no data; any later data is checked
            self.dataset_spec()  # fail now, before any image is read, if the classes differ

    def dataset_spec(self) -> DatasetSpec:
        """The class map of the data (manifest or data config; no image read), in the checkpoint's class
        order when one was adopted for resume or eval."""
        if self.spec is None:
            d, m = self.cfg.data, self.cfg.model
            if not d.root:
                raise SegmentationDataError(
                    "data.root is not set: pass data.root=DIR (a folder with images/ and masks/)"
                )
            spec = resolve_spec(d, m.num_classes)
            if spec.format == "nifti" and d.normalization == "imagenet":
                raise SegmentationDataError(
                    "data.normalization=imagenet needs 8/16-bit images; for NIfTI use zscore, minmax or "
                    "ct_window"
                )
            if self._checkpoint is not None:
                meta, source, purpose = self._checkpoint
                spec = align_spec(spec, meta, source=source, purpose=purpose, where=self._names_source())
            self.spec = spec
        return self.spec

    def _names_source(self) -> str | None:
        """Where the data's class names come from (None: nowhere, the default names class0.. are used)."""
        d = self.cfg.data
        if d.manifest:
            return str(Path(d.root) / d.manifest)
        return "data.class_names" if d.class_names else None

    def _dataset_args(self) -> dict:
        d, m = self.cfg.data, self.cfg.model
        return dict(
            spec=self.dataset_spec(),
            in_chans=m.backbone.in_chans,
            normalization=d.normalization,
            ct_window=d.ct_window,
            axis=d.nifti_axis,
            cache_volumes=d.cache_volumes,
        )

    def build_datasets(self) -> tuple[SegmentationDataset, SegmentationDataset | None]:
        d, m = self.cfg.data, self.cfg.model
        spec = self.dataset_spec()
        pairs = discover_pairs(d.root, spec, m.backbone.in_chans, d.case_pattern)
        records = pairs_to_records(pairs, spec, d.nifti_axis)
        validate_mask_values(records, spec)
        train_idx, val_idx = partition_by_case(records, validation_cases([p.case_id for p in pairs], d))
        common = self._dataset_args()
        train = SegmentationDataset(
            [records[i] for i in train_idx], transform=build_train_transform(self.cfg.data.augment), **common
        )
        val = SegmentationDataset([records[i] for i in val_idx], **common) if val_idx else None
        return train, val

    def build_eval_dataset(self) -> SegmentationDataset | None:
        """The validation cases alone: the split is chosen from file names, then only validation files
        are opened, so a broken training image does not stop an evaluation."""
        d, m = self.cfg.data, self.cfg.model
        spec = self.dataset_spec()
        pairs = discover_pairs(d.root, spec, m.backbone.in_chans, d.case_pattern)
        val_cases = validation_cases([p.case_id for p in pairs], d)
        if not val_cases:
            return None
        records = pairs_to_records([p for p in pairs if p.case_id in val_cases], spec, d.nifti_axis)
        validate_mask_values(records, spec)
        return SegmentationDataset(records, **self._dataset_args())

    def collate_fn(self, batch: list[dict]) -> dict:
        return pad_collate(batch)

    # ------------------------------------------------------------------------------------------ train
    def compute_loss(self, outputs: Any, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Main loss plus deep-supervision terms (aux logits upsampled to the mask), weights decay**k."""
        target = make_targets(mask, self.cfg.model.mode, self.cfg.model.regions)
        if isinstance(outputs, tuple):
            logits, aux = outputs
        else:
            logits, aux = outputs, []
        main = self.loss_fn(logits.float(), target)
        total, norm = main, 1.0
        for k, aux_logits in enumerate(aux, start=1):
            weight = self.cfg.loss.deep_supervision_decay**k
            up = F.interpolate(aux_logits.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
            total = total + weight * self.loss_fn(up, target)
            norm += weight
        return {"loss": total / norm, "loss_main": main.detach()}

    def _inputs(self, images: torch.Tensor, device: Any) -> torch.Tensor:
        """Images on the device, NHWC when the model's weights are (train.channels_last)."""
        images = images.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def training_step(self, model: nn.Module, batch: dict, device: Any) -> dict[str, torch.Tensor]:
        image = self._inputs(batch["image"], device)
        mask = batch["mask"].to(device, non_blocking=True)
        return self.compute_loss(model(image), mask)

    # --------------------------------------------------------------------------------------- evaluate
    def channel_names(self) -> list[str]:
        m = self.cfg.model
        if m.mode == "multilabel":
            return list(m.region_names) or [f"region{i}" for i in range(len(m.regions))]
        return list(self.spec.class_names) if self.spec else [f"class{i}" for i in range(m.num_classes)]

    def _gt_channels(self, labels: torch.Tensor) -> torch.Tensor:
        m = self.cfg.model
        if m.mode == "multilabel":
            return labels_to_region_targets(labels, m.regions, IGNORE_INDEX) == 1
        return labels[:, None] == torch.arange(m.num_classes, device=labels.device)[None, :, None, None]

    def tta_model(self, model: nn.Module) -> nn.Module:
        """`model` with eval.tta's views (`model` itself when it is []): each view's map inverted, the
        probabilities averaged (softmax for multiclass, sigmoid for binary / multilabel) and handed on as
        logits (`tasks.common.tta.mean_probability_logits`).

        `predict_logits` runs it on every sliding-window tile, as nnU-Net mirrors each tile: the tile grid
        and its Gaussian weights are the same for every view (a grid laid on the flipped image would not
        be: the last tile sits at size - tile), each inverse is exact, and memory stays one tile's.
        """
        activation = "softmax" if self.cfg.model.mode == "multiclass" else "sigmoid"
        return with_tta(model, self.cfg.eval.tta, activation, dense=True)

    @torch.no_grad()
    def summary_extras(self, run_dir: Path) -> dict:
        """summary.json gets the per-case rows and class means under the key ``segmentation``."""
        extras = segmentation_summary(run_dir)
        return {"segmentation": extras} if extras else {}

    def evaluate(self, model: nn.Module, loader, device: Any, run_dir: Path, epoch: int) -> dict[str, float]:
        """Per-image, per-case (per-volume for NIfTI) metrics; writes seg_summary.json and overlays."""
        m, e = self.cfg.model, self.cfg.eval
        dataset: SegmentationDataset = loader.dataset
        if self.spec is None:
            self.spec = dataset.spec
        names = self.channel_names()
        acc = CaseMetricAccumulator(names, e.empty_rule, self._mean_channels(names), with_hd95=e.hd95)
        volumes: dict[str, dict] = {}
        slices_per_volume: dict[str, int] = {}
        for record in dataset.records:
            if record.slice_index is not None:
                slices_per_volume[record.stem] = slices_per_volume.get(record.stem, 0) + 1
        overlays_left = e.overlays
        loss_sum, loss_count = 0.0, 0
        predictor = self.tta_model(model)
        for batch in loader:
            images = self._inputs(batch["image"], device)
            masks = batch["mask"].to(device)
            logits = predict_logits(predictor, images, e.tile_size, e.tile_overlap).float()
            loss_sum += float(self.loss_fn(logits, make_targets(masks, m.mode, m.regions)))
            loss_count += 1
            pred_channels = logits_to_channels(logits, m.mode, m.num_classes, e.threshold)
            pred_labels = logits_to_labels(logits, m.mode, e.threshold, m.regions)
            gt_channels = self._gt_channels(masks)
            for i, index in enumerate(batch["index"].tolist()):
                h, w = batch["size"][i].tolist()
                record = dataset.records[index]
                pred = pred_channels[i, :, :h, :w].cpu().numpy()
                gt = gt_channels[i, :, :h, :w].cpu().numpy()
                if overlays_left > 0:
                    overlays_left -= 1
                    save_overlay(
                        run_dir / "overlays" / f"{record.image_id}.png",
                        images[i, :, :h, :w].float().cpu().numpy(),
                        pred_labels[i, :h, :w].cpu().numpy(),
                        masks[i, :h, :w].cpu().numpy(),
                    )
                if record.slice_index is None:
                    acc.add(pred, gt, record.case_id, record.image_id, dataset.spacing(index))
                    continue
                vol = volumes.setdefault(record.stem, {"slices": {}, "index": index})
                vol["slices"][record.slice_index] = (pred, gt)
                if len(vol["slices"]) == slices_per_volume[record.stem]:
                    order = sorted(vol["slices"])
                    axis = dataset.axis + 1  # +1: channel axis first
                    pred_vol = np.stack([vol["slices"][k][0] for k in order], axis=axis)
                    gt_vol = np.stack([vol["slices"][k][1] for k in order], axis=axis)
                    acc.add(
                        pred_vol, gt_vol, record.case_id, record.stem, dataset.volume_spacing(vol["index"])
                    )
                    del volumes[record.stem]
        summary = acc.summary()
        summary.update(
            epoch=epoch,
            channels=names,
            mode=m.mode,
            spacing_units="mm" if self._has_spacing(dataset) else "pixels",
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(json_safe(summary), indent=2)
        (run_dir / SEG_SUMMARY).write_text(text)
        dice_mean = summary["means"]["dice_mean"]
        if not math.isnan(dice_mean) and dice_mean > self._best_dice:
            self._best_dice = dice_mean
            (run_dir / SEG_SUMMARY_BEST).write_text(text)
        metrics = {k: v for k, v in summary["means"].items()}
        metrics["loss"] = loss_sum / max(loss_count, 1)
        return metrics

    def _has_spacing(self, dataset: SegmentationDataset) -> bool:
        return bool(dataset.records and (dataset.records[0].slice_index is not None or self.spec.spacing))

    def _mean_channels(self, names: Sequence[str]) -> list[int]:
        """The channels dice_mean averages: every region, or every class but eval.background_class."""
        m, e = self.cfg.model, self.cfg.eval
        if m.mode == "multilabel" or e.background_class is None:
            return list(range(len(names)))
        return [c for c in range(len(names)) if c != e.background_class]

    # ------------------------------------------------------------------- cross-validation (train_cv)
    def fold_units(self) -> FoldUnits:
        """The cases of the data (file names only): tools/train_cv.py deals whole cases to the folds."""
        d, m = self.cfg.data, self.cfg.model
        pairs = discover_pairs(d.root, self.dataset_spec(), m.backbone.in_chans, d.case_pattern)
        return case_units(p.case_id for p in pairs)

    def pooled_metrics(self, fold_dirs: Sequence[Path]) -> dict[str, float]:
        """nnU-Net's cross-validation summary: the class means over the validation cases of all folds
        together (each case once, NaN cases left out as in one evaluation), from the per-case rows of each
        fold's latest evaluation (seg_summary.json; tools/train_cv.py's evaluation of its best.pt)."""
        rows: list[dict] = []
        channels: list[str] | None = None
        for run_dir in fold_dirs:
            path = Path(run_dir) / SEG_SUMMARY
            if not path.is_file():
                raise SegmentationDataError(f"{path} is missing: evaluate the fold first")
            summary = json.loads(path.read_text())
            if channels is not None and summary["channels"] != channels:
                raise SegmentationDataError(f"{path}: channels {summary['channels']}, other folds {channels}")
            channels = summary["channels"]
            # strict JSON stored NaN as null
            rows += [{k: math.nan if v is None else v for k, v in r.items()} for r in summary["per_case"]]
        return case_means(rows, channels or [], self._mean_channels(channels or []))[0]

    # ------------------------------------------------------------------------------------ deployment
    def input_size(self) -> tuple[int, int]:
        """The training crop (256 x 256 when whole images are used: the U-Net takes any size)."""
        height, width = (self.cfg.data.augment.crop_size or [256, 256])[:2]
        return (height, width)

    def image_and_target(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return sample["image"], sample["mask"]

    def export_recipe(self) -> Any:
        """Any H x W: the pad to the network stride happens inside the exported graph."""
        from tasks.deploy.recipes import UNetExport  # late import: deploy builds on the tasks

        return UNetExport()

    def sample_tile(self, dataset: SegmentationDataset, index: int) -> tuple[np.ndarray, str]:
        """The image with its mask blended over it, titled with the classes present."""
        image, mask = self.image_and_target(dataset[index])
        classes = sorted(int(v) for v in mask.unique() if v != IGNORE_INDEX)
        return blend(to_display(image.float().numpy()), mask.numpy()), f"classes {classes}"


def segmentation_summary(run_dir: str | Path) -> dict:
    """The per-case table and class means of the best evaluation (else the latest), or {} if none ran."""
    run_dir = Path(run_dir)
    source = run_dir / SEG_SUMMARY_BEST if (run_dir / SEG_SUMMARY_BEST).is_file() else run_dir / SEG_SUMMARY
    return json.loads(source.read_text()) if source.is_file() else {}
