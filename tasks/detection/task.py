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

from tasks.common.backbone import model_signature, upgrade_model_section
from tasks.engine.registry import register_task
from tasks.engine.task import Task

from .classes import align_with_checkpoint, map_from_meta, meta_from_map
from .config import DetectionConfig, DetectionDataConfig
from .data import CategoryMap, CocoDetection, collate_detection, split_image_ids, subset_coco
from .data_check import DatasetError, apply_policy, check_coco, load_coco_json
from .metrics import CocoEvaluator, detections_to_coco, format_per_class_table
from .model import build_detector
from .sampler import GroupedBatchSampler, aspect_ratio_groups
from .transforms import DetectionTransform
from .tta import with_detection_tta
from .validation import validate_config
from .visualize import draw_detections, save_png

log = logging.getLogger("tasks.detection")


def resolve_data_paths(cfg: DetectionDataConfig) -> tuple[Path, Path, Path | None, Path | None]:
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


def count_objects(data: dict) -> int:
    """Annotations that are training targets and evaluation ground truth (crowd regions are neither)."""
    return sum(1 for ann in data["annotations"] if not ann.get("iscrowd", 0))


def why_no_objects(data: dict, listed: int, policy: str) -> str:
    """Why a checked annotation file has no object left (for the message of `require_objects`).

    Args:
        data: the checked dictionary.
        listed: annotations the file listed before the data check.
        policy: data.check_policy.
    """
    if not listed:
        return "its 'annotations' list is empty"
    if data["annotations"]:
        return f"all {len(data['annotations'])} of its annotations are iscrowd=1 (ignored regions)"
    return f"data.check_policy={policy} dropped all {listed} of its annotations"


def require_objects(data: dict, source: str, why: str) -> None:
    """Refuse a training set without a single object: it would train on nothing and report AP -1.

    Args:
        data: the training dictionary.
        source: the annotation file (or the split of it), named in the message.
        why: how it came to have none (see `why_no_objects`).
    """
    if not count_objects(data):
        raise DatasetError(
            f"{source}: no annotations: nothing to learn ({why}). Expected at least one object "
            "{'image_id', 'category_id', 'bbox': [x, y, width, height]} that is not iscrowd=1"
        )


@register_task
class DetectionTask(Task):
    """Faster R-CNN + FPN on a COCO-format dataset; best checkpoint by COCO AP."""

    name = "detection"
    config_cls = DetectionConfig
    default_best_metric = "AP"
    best_mode = "max"

    def __init__(self, cfg: DetectionConfig):
        super().__init__(cfg)
        validate_config(cfg)
        self._data: dict | None = None
        self._train_raw: dict | None = None
        self.evaluator: CocoEvaluator | None = None
        self.category_map: CategoryMap | None = None
        # The classes the config itself declares (a run's saved config.yaml lists those it was trained
        # on), kept apart from model.category_ids, which is filled in from the data below.
        self._declared_ids = list(cfg.model.category_ids)
        self._checkpoint: tuple[CategoryMap, str, str] | None = None

    # --------------------------------------------------------------------------------------- classes
    def checkpoint_meta(self) -> dict:
        """The category ids and names in label order: what each output label of the weights means."""
        return meta_from_map(self.categories())

    def adopt_checkpoint_meta(self, meta: dict, source: str, purpose: str) -> None:
        """Use the checkpoint's label order for resume/eval (see `classes.align_with_checkpoint`)."""
        wanted = map_from_meta(meta or {}, source)
        if wanted is None:
            return  # a checkpoint from before classes were recorded: nothing to compare
        if purpose == "load":  # rebuilding from the file alone: its classes, no annotation file read
            self.category_map = wanted
            m = self.cfg.model
            m.category_ids, m.class_names = list(wanted.cat_ids), list(wanted.names)
            return
        self._checkpoint = (wanted, source, purpose)
        self.category_map = None  # resolved again, now against the checkpoint's classes
        self.categories()  # fail now, before any image is read, if the classes differ

    def meta_from_state(self, state: dict) -> dict:
        """Older checkpoints: the categories their saved config recorded (model.category_ids)."""
        m = self.cfg.model
        return {"category_ids": list(m.category_ids), "class_names": list(m.class_names)}

    def categories(self) -> CategoryMap:
        """The label <-> category id map: the training file's categories in the label order of the
        checkpoint (resume/eval) or of model.category_ids when given, else by ascending id."""
        if self.category_map is None:
            self.category_map = self._resolve_categories()
            m = self.cfg.model
            m.category_ids, m.class_names = list(self.category_map.cat_ids), list(self.category_map.names)
        return self.category_map

    def _resolve_categories(self) -> CategoryMap:
        train_ann = resolve_data_paths(self.cfg.data)[0]
        categories = self._train_json()["categories"]
        if not categories:
            raise DatasetError(f"{train_ann}: 'categories' is empty; a detector needs at least one class")
        data = CategoryMap(categories)
        if self._checkpoint is not None:
            wanted, source, purpose = self._checkpoint
            aligned = align_with_checkpoint(
                data, wanted, source=source, purpose=purpose, ann_file=str(train_ann)
            )
            if purpose != "weights":
                return aligned
        ids = self._declared_ids
        if not ids:
            return data
        if sorted(ids) != sorted(data.cat_ids):
            raise DatasetError(
                f"model.category_ids={ids} (from the config) differ from the categories of {train_ann}: "
                f"{data.cat_ids}"
            )
        name_of = dict(zip(data.cat_ids, data.names, strict=True))
        return CategoryMap([{"id": c, "name": name_of[c]} for c in ids], keep_order=True)

    # ------------------------------------------------------------------------------------------ data
    def _train_json(self) -> dict:
        """The training annotation file as written (structure checked; no image opened), read once."""
        if self._train_raw is None:
            self._train_raw = load_coco_json(resolve_data_paths(self.cfg.data)[0])
        return self._train_raw

    def _checked(self, data: dict, ann_file: Path, images: Path) -> dict:
        """``data`` after the data check and data.check_policy (raises for the fail policy)."""
        d = self.cfg.data
        problems = check_coco(data, images, check_files=d.check_files, box_tolerance=d.box_tolerance)
        clean, actions = apply_policy(data, problems, d.check_policy, source=str(ann_file))
        for action in actions:
            log.warning("%s: %s", ann_file, action)
        return clean

    def _load_val(self, val_ann: Path, val_images: Path) -> dict:
        """The checked validation file, whose category ids must be the training file's."""
        train_ann = resolve_data_paths(self.cfg.data)[0]
        val = self._checked(load_coco_json(val_ann), val_ann, val_images)
        train_ids = sorted(c["id"] for c in self._train_json()["categories"])
        if sorted(c["id"] for c in val["categories"]) != train_ids:
            raise DatasetError(f"{val_ann} and {train_ann} define different category ids")
        return val

    def _split(self, image_ids: list[int]) -> tuple[list[int], list[int]]:
        """The seeded held-out split of the training file's image ids.

        It uses every image the file lists, before the data check drops any, so that training and a later
        --eval-only (which checks the validation images only) agree on it.
        """
        d = self.cfg.data
        return split_image_ids(image_ids, d.val_fraction, d.split_seed)

    def _prepare(self) -> dict:
        """Load and check the training (and validation) annotations once, before any training."""
        if self._data is not None:
            return self._data
        d = self.cfg.data
        train_ann, train_images, val_ann, val_images = resolve_data_paths(d)
        raw = self._train_json()
        train = self._checked(raw, train_ann, train_images)
        require_objects(train, str(train_ann), why_no_objects(train, len(raw["annotations"]), d.check_policy))
        val = self._load_val(val_ann, val_images) if val_ann is not None else None
        self.categories()
        image_ids = [img["id"] for img in raw["images"]]
        self._train_raw = None  # the checked copy is all training needs from here on
        self._data = dict(
            train=train, train_images=train_images, val=val, val_images=val_images, image_ids=image_ids
        )
        return self._data

    def _val_set(self, val_gt: dict, images: Path, source: str) -> CocoDetection:
        """The validation dataset; indexes its ground truth for the evaluator once."""
        if not count_objects(val_gt):
            log.warning(
                "%s: the validation set has no annotations, so AP is undefined: every COCO metric will be "
                "reported as -1 (as pycocotools does). Validate on images with annotated objects.",
                source,
            )
        self.evaluator = CocoEvaluator(val_gt)  # ground truth indexed once, reused every epoch
        return CocoDetection(val_gt, images, self.categories(), transform=None, keep_empty=True)

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self._prepare()
        d = self.cfg.data
        train_ann, _, val_ann, _ = resolve_data_paths(d)
        train, val_gt, val_images, val_source = data["train"], data["val"], data["val_images"], str(val_ann)
        if val_gt is None and d.val_fraction > 0:
            train_ids, val_ids = self._split(data["image_ids"])
            train, val_gt = subset_coco(train, train_ids), subset_coco(train, val_ids)
            val_images, val_source = data["train_images"], f"the held-out split of {train_ann}"
            log.info(
                "held-out split (seed %d): %d train / %d val images",
                d.split_seed,
                len(train["images"]),
                len(val_gt["images"]),
            )
            why = (
                "every annotated image went to the validation part; lower data.val_fraction="
                f"{d.val_fraction} or change data.split_seed={d.split_seed}"
            )
            require_objects(train, f"the training part of {val_source}", why)
        train_set = CocoDetection(
            train,
            data["train_images"],
            self.categories(),
            DetectionTransform(d.augment),
            keep_empty=d.keep_empty_images,
        )
        if len(train_set) == 0:
            raise DatasetError("no training images left after the data check and keep_empty_images")
        val_set = self._val_set(val_gt, val_images, val_source) if val_gt is not None else None
        return train_set, val_set

    def build_eval_dataset(self) -> Dataset | None:
        """The validation set alone: only its images are checked (a broken training image does not
        stop an evaluation); the training file is read for its categories and the held-out split."""
        d = self.cfg.data
        train_ann, train_images, val_ann, val_images = resolve_data_paths(d)
        self.categories()
        if val_ann is not None:
            return self._val_set(self._load_val(val_ann, val_images), val_images, str(val_ann))
        if d.val_fraction <= 0:
            return None
        raw = self._train_json()
        _, val_ids = self._split([img["id"] for img in raw["images"]])
        val_gt = self._checked(subset_coco(raw, val_ids), train_ann, train_images)
        return self._val_set(val_gt, train_images, f"the held-out split of {train_ann}")

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
    def build_model(self, pretrained: bool = True) -> nn.Module:
        return build_detector(self.cfg.model, self.categories().num_classes, load_weights=pretrained)

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Older configs: backbone keys (and norm, gn_groups) into model.backbone; norm=auto resolved."""
        model = dict(config.get("model") or {})
        norm, pretrained = model.pop("norm", None), model.get("weights") or model.get("detector_weights")
        if norm == "auto":
            norm = "frozen_bn" if pretrained else "bn"
        upgraded = upgrade_model_section({**config, "model": model})
        if norm:
            upgraded["model"]["backbone"]["norm"] = norm
        return upgraded

    def model_signature(self) -> dict:
        """What a resumed or evaluated checkpoint must match: the architecture and the number of classes,
        not the weights files or test-time thresholds (those may change between runs of the same model)."""
        m = self.cfg.model
        return {
            "backbone": model_signature(m)["backbone"],
            "out_indices": list(m.out_indices),
            "fpn_channels": m.fpn_channels,
            "extra_level": m.extra_level,
            "anchors_per_location": [len(s) * len(m.aspect_ratios) for s in m.anchor_sizes]
            or len(m.aspect_ratios),
            "roi_output_size": m.roi_output_size,
            # The number of classes fixes the predictor's shape; which class each label means is the
            # checkpoint meta's business (checked, and the order adopted, by adopt_checkpoint_meta).
            "num_classes": len(self.categories().cat_ids),
            # Only when not the default, so that the signatures recorded by FPN checkpoints still match.
            **({"head": m.head} if m.head != "fpn" else {}),
        }

    def training_step(self, model: nn.Module, batch: Any, device: Any) -> dict[str, Tensor]:
        images, targets = _to_device(batch, device)
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **losses}

    # -------------------------------------------------------------------------------------- evaluate
    def tta_model(self, model: nn.Module) -> nn.Module:
        """`model` with the eval section's test-time augmentation (`tasks.detection.tta`), or itself."""
        return with_detection_tta(model, self.cfg.eval, self.cfg.model)

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
        detector = self.tta_model(model)  # validation losses stay those of the model itself
        for batch in loader:
            images, targets = _to_device(batch, device)
            for name, value in validation_losses(model, images, targets).items():
                loss_sums[name] = loss_sums.get(name, 0.0) + float(value)
            outputs = detector(images)
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

    # ----------------------------------------------------------------------------------- deployment
    def input_size(self) -> tuple[int, int]:
        """The test-time size: images are resized so that their short side is model.min_size."""
        side = self.cfg.model.min_size[0]
        return (side, side)

    def model_input(self, images: Tensor) -> list[Tensor]:
        """torchvision detectors take a list of (C, H, W) images."""
        return list(images)

    def export_recipe(self) -> Any:
        """One fixed input size (data-dependent NMS output); see tasks.deploy.recipes."""
        from tasks.deploy.recipes import FasterRCNNExport  # late import: deploy builds on the tasks

        return FasterRCNNExport()

    def sample_tile(self, dataset: Dataset, index: int) -> tuple[Tensor, str]:
        """The image with its ground-truth boxes drawn (green)."""
        image, target = dataset[index]
        empty = torch.zeros(0)
        drawn = draw_detections(
            image, empty.reshape(0, 4), empty.long(), empty, ["background"], gt_boxes=target["boxes"]
        )
        return drawn, f"{len(target['boxes'])} boxes"


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
