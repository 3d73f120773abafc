"""The detection Task: what the shared Trainer calls to build, train and evaluate Faster R-CNN."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from tasks.engine.task import Task

from .build import build_detector, resolve_norm
from .config import DetDataConfig, DetectionConfig
from .data_check import load_and_check
from .dataset import CategoryMap, CocoDetection, collate_detection, split_image_ids, subset_coco
from .evaluation import CocoEvaluator, detections_to_coco, format_per_class_table
from .sampler import GroupedBatchSampler, aspect_ratio_groups
from .transforms import DetectionTransform
from .visualize import draw_detections, save_png

log = logging.getLogger("tasks.detection")


def resolve_data_paths(cfg: DetDataConfig) -> tuple[Path, Path, Path | None, Path | None]:
    """(train annotations, train images, val annotations or None, val images or None) from the config."""
    root = Path(cfg.root) if cfg.root else None
    train_ann = Path(cfg.train_ann) if cfg.train_ann else (root / "annotations.json" if root else None)
    train_images = Path(cfg.train_images) if cfg.train_images else (root / "images" if root else None)
    if train_ann is None or train_images is None:
        raise ValueError(
            "set data.root (a folder with annotations.json and images/) or both data.train_ann "
            "and data.train_images"
        )
    val_ann = Path(cfg.val_ann) if cfg.val_ann else None
    val_images = Path(cfg.val_images) if cfg.val_images else (train_images if val_ann else None)
    return train_ann, train_images, val_ann, val_images


class DetectionTask(Task):
    """Faster R-CNN + FPN on a COCO-format dataset; best checkpoint by COCO AP."""

    name = "detection"
    default_best_metric = "AP"
    best_mode = "max"

    def __init__(self, cfg: DetectionConfig):
        super().__init__(cfg)
        self._data: dict | None = None
        self.evaluator: CocoEvaluator | None = None
        self.category_map: CategoryMap | None = None

    # ------------------------------------------------------------------------------------------ data
    def _prepare(self) -> dict:
        """Load and check the annotations once (fails before any training) and fix the class list."""
        if self._data is not None:
            return self._data
        d = self.cfg.data
        train_ann, train_images, val_ann, val_images = resolve_data_paths(d)
        check = dict(check_files=d.check_files, box_tolerance=d.box_tolerance)
        train, actions = load_and_check(train_ann, train_images, d.check_policy, **check)
        for action in actions:
            log.warning("%s: %s", train_ann, action)
        val = None
        if val_ann is not None:
            val, actions = load_and_check(val_ann, val_images, d.check_policy, **check)
            for action in actions:
                log.warning("%s: %s", val_ann, action)
            if sorted(c["id"] for c in val["categories"]) != sorted(c["id"] for c in train["categories"]):
                raise ValueError(f"{val_ann} and {train_ann} define different category ids")
        if not train["categories"]:
            raise ValueError(f"{train_ann}: 'categories' is empty; a detector needs at least one class")
        category_map = CategoryMap(train["categories"])
        m = self.cfg.model
        if m.category_ids and list(m.category_ids) != category_map.cat_ids:
            raise ValueError(
                f"model.category_ids={m.category_ids} (from the config or checkpoint) differ from the "
                f"categories of {train_ann}: {category_map.cat_ids}"
            )
        m.category_ids, m.class_names = list(category_map.cat_ids), list(category_map.names)
        self.category_map = category_map
        self._data = dict(train=train, train_images=train_images, val=val, val_images=val_images)
        return self._data

    def categories(self) -> CategoryMap:
        """The label <-> category id map (from the config if stored there, else from the annotations)."""
        m = self.cfg.model
        if self.category_map is None and m.category_ids:
            names = m.class_names or [str(c) for c in m.category_ids]
            self.category_map = CategoryMap(
                [{"id": c, "name": n} for c, n in zip(m.category_ids, names, strict=True)]
            )
        if self.category_map is None:
            self._prepare()
        return self.category_map

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self._prepare()
        d = self.cfg.data
        cmap = self.category_map
        train, val_gt, val_images = data["train"], data["val"], data["val_images"]
        if val_gt is None and d.val_fraction > 0:
            train_ids, val_ids = split_image_ids(
                [img["id"] for img in train["images"]], d.val_fraction, d.split_seed
            )
            train, val_gt = subset_coco(train, train_ids), subset_coco(train, val_ids)
            val_images = data["train_images"]
            log.info(
                "held-out split (seed %d): %d train / %d val images",
                d.split_seed,
                len(train_ids),
                len(val_ids),
            )
        train_set = CocoDetection(
            train, data["train_images"], cmap, DetectionTransform(d.augment), keep_empty=d.keep_empty_images
        )
        if len(train_set) == 0:
            raise ValueError("no training images left after the data check and keep_empty_images")
        val_set = None
        if val_gt is not None:
            val_set = CocoDetection(val_gt, val_images, cmap, transform=None, keep_empty=True)
            self.evaluator = CocoEvaluator(val_gt)  # ground truth indexed once, reused every epoch
        return train_set, val_set

    def collate_fn(self, batch: list) -> Any:
        return collate_detection(batch)

    def train_batch_sampler(self, dataset: Dataset, batch_size: int, shuffle_seed: int) -> Sampler | None:
        if not self.cfg.data.group_aspect_ratio:
            return None
        inner = dataset
        while not hasattr(inner, "aspect_ratios") and hasattr(inner, "dataset"):
            inner = inner.dataset
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        return GroupedBatchSampler(
            aspect_ratio_groups(inner.aspect_ratios()),
            batch_size,
            seed=shuffle_seed,
            num_replicas=world,
            rank=rank,
        )

    # ----------------------------------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        return build_detector(self.cfg.model, self.categories().num_classes)

    def model_signature(self) -> dict:
        """What a resumed checkpoint must match: the architecture and the classes, not the weights files or
        test-time thresholds (those may change between runs of the same model)."""
        m = self.cfg.model
        return {
            "arch": m.arch,
            "out_indices": list(m.out_indices),
            "norm": resolve_norm(m),
            "gn_groups": m.gn_groups,
            "fpn_channels": m.fpn_channels,
            "extra_level": m.extra_level,
            "anchors_per_location": [len(s) * len(m.aspect_ratios) for s in m.anchor_sizes]
            or len(m.aspect_ratios),
            "roi_output_size": m.roi_output_size,
            "category_ids": list(m.category_ids),
        }

    def training_step(self, model: nn.Module, batch: Any, device: Any) -> dict[str, Tensor]:
        images, targets = _to_device(batch, device)
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **losses}

    # -------------------------------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, device: Any, run_dir: Path, epoch: int
    ) -> dict[str, float]:
        if self.evaluator is None:
            raise RuntimeError("evaluate() needs build_datasets() first (it indexes the ground truth)")
        cmap = self.categories()
        loss_sums: dict[str, float] = {}
        results: list[dict] = []
        vis: list[tuple[Tensor, Tensor, dict]] = []
        n_batches = 0
        for batch in loader:
            images, targets = _to_device(batch, device)
            for name, value in validation_losses(model, images, targets).items():
                loss_sums[name] = loss_sums.get(name, 0.0) + float(value)
            outputs = model(images)
            results.extend(detections_to_coco(outputs, [t["image_id"] for t in targets], cmap))
            for image, out, target in zip(images, outputs, targets, strict=True):
                if len(vis) < self.cfg.data.num_vis_images:
                    vis.append((image.cpu(), target["boxes"].cpu(), {k: v.cpu() for k, v in out.items()}))
            n_batches += 1
        metrics, per_class = self.evaluator.evaluate(results)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "val_detections.json").write_text(json.dumps(results))
        table = format_per_class_table(per_class)
        (run_dir / "val_per_class_ap.txt").write_text(f"epoch {epoch}\n{table}\n")
        log.info("epoch %d per-class AP:\n%s", epoch, table)
        names = ["background", *cmap.names]
        for i, (image, gt_boxes, out) in enumerate(vis):
            drawn = draw_detections(
                image,
                out["boxes"],
                out["labels"],
                out["scores"],
                names,
                score_thresh=self.cfg.data.vis_score_thresh,
                gt_boxes=gt_boxes,
            )
            save_png(drawn, run_dir / "vis" / f"epoch{epoch:03d}_{i}.png")
        val_losses = {k: v / max(n_batches, 1) for k, v in loss_sums.items()}
        return {**metrics, **val_losses}


def validation_losses(model: nn.Module, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
    """Faster R-CNN losses on validation data without changing the model or the RNG stream.

    torchvision computes losses only in training mode; there BatchNorm would update its running
    statistics, so every norm layer is kept in eval mode, and RPN/RoI sampling (random) runs on a forked
    RNG so validation does not shift the training run's random stream.
    """
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            losses = model(images, targets)
    finally:
        model.train(was_training)
    loss = sum(losses.values())
    return {"loss": loss, **losses}


def _to_device(batch: Any, device: Any) -> tuple[list[Tensor], list[dict]]:
    images, targets = batch
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets
