"""Base training of few-shot methods as an engine `Task`: classification on base classes (Baseline,
Baseline++) or episodic training (ProtoNet); validation = nearest-prototype episodes on val classes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tasks.common.backbone import build_backbone, model_signature, upgrade_model_section
from tasks.common.images import read_image
from tasks.engine.registry import register_task
from tasks.engine.task import SampleGrid, Task

from .config import TRAIN_METHODS, FewShotConfig
from .data import (
    ClassFolderIndex,
    FewShotDataError,
    RotatedClasses,
    check_image_headers,
    dataset_from_index,
    rotated_index,
    scan_class_folders,
)
from .episodes import EpisodeBatchSampler, EpisodeSpec, sample_episodes, validate_spec
from .heads import prototype_logits
from .methods import ProtoNet
from .metrics import evaluate_episodes
from .model import FewShotNet, with_views
from .splits import SPLIT_NAMES, load_split, save_split, split_classes
from .transforms import build_transform
from .validation import validate_config

log = logging.getLogger("tasks.fewshot")

# Fewer classes make base training or episodes trivial: one class is always predicted right (loss 0).
MIN_CLASSES = 2
# What `data.augment: true` meant before augmentation became a section.
LEGACY_AUGMENT = {"rotate": 10.0, "translate": 0.1, "scale": 0.1}


@dataclass
class SplitData:
    """The scanned dataset and its class-level split, as indices."""

    index: ClassFolderIndex
    split: dict[str, list[str]]

    def part(self, name: str) -> ClassFolderIndex:
        if not self.split[name]:
            raise FewShotDataError(f"split part {name!r} of {self.index.root} has no classes")
        return self.index.subset(self.split[name])


def configured_split(data_cfg, index: ClassFolderIndex) -> dict[str, list[str]]:
    """The split the config asks for: `data.split_file`, else seeded `data.split_fractions`."""
    if data_cfg.split_file:
        split = load_split(data_cfg.split_file)
        index.subset([c for part in split.values() for c in part])  # unknown classes -> clear error
        return split
    return split_classes(index, data_cfg.split_fractions, data_cfg.split_seed, data_cfg.split_by)


def load_split_data(data_cfg, check_headers: bool = True) -> SplitData:
    """Scan `data_cfg.root` and split its classes (file or seeded fractions).

    Args:
        check_headers: open every image header first (unreadable files fail here); False only lists files.
    """
    if not data_cfg.root:
        raise FewShotDataError("data.root is empty: set it to a class-folder dataset (data.root=DIR)")
    index = scan_class_folders(data_cfg.root)
    if check_headers:
        check_image_headers([path for path, _ in index.samples()])
    return SplitData(index, configured_split(data_cfg, index))


def describe_split(data_cfg) -> str:
    """The settings that made a split, for messages."""
    if data_cfg.split_file:
        return f"data.split_file={data_cfg.split_file}"
    fractions = ", ".join(f"{f:g}" for f in data_cfg.split_fractions)
    return (
        f"data.split_fractions=[{fractions}], data.split_seed={data_cfg.split_seed}, "
        f"data.split_by={data_cfg.split_by}"
    )


def _part_problem(name: str, size: int, data_cfg, uses_val: bool) -> str | None:
    """Why part `name` of `size` classes cannot serve this run, or None when it can."""
    if name == "base" and size < MIN_CLASSES:
        return "base training needs at least 2 classes (with one, every prediction is right: loss 0)"
    if name == "val" and uses_val and size < MIN_CLASSES:
        return (
            "validation episodes need at least 2 classes; set data.val_episodes=0 to train without validation"
        )
    # A split file names its parts explicitly; a fraction > 0 that rounds to no class is a surprise.
    requested = not data_cfg.split_file and data_cfg.split_fractions[SPLIT_NAMES.index(name)] > 0
    if size == 0 and requested:
        return "the split leaves this part empty; give it a larger fraction or use more classes"
    return None


def check_split_sizes(split_data: SplitData, data_cfg, uses_val: bool) -> None:
    """Refuse a split that leaves a part this run uses with < 2 classes, or a requested part empty.

    A seeded split of a handful of classes rounds parts down to 0 or 1 class without a word (the default
    0.6/0.2/0.2 of 2 classes is 1 / 0 / 1): base training on one class is "perfect" and validation on
    none or one class reports nothing real.

    Raises:
        FewShotDataError: naming the part, its size, the split settings and the dataset's class count.
    """
    total = split_data.index.num_classes
    for name in SPLIT_NAMES:
        size = len(split_data.split[name])
        problem = _part_problem(name, size, data_cfg, uses_val)
        if problem is None:
            continue
        hint = ""
        if total < MIN_CLASSES * len(SPLIT_NAMES):
            hint = f" Is data.root the right folder? It holds only {total} class(es)."
        raise FewShotDataError(
            f"split part {name!r} has {size} class(es) ({describe_split(data_cfg)}; {total} classes under "
            f"{split_data.index.root}): {problem}.{hint}"
        )


def build_net_from_config(cfg: FewShotConfig, num_classes: int, load_weights: bool = True) -> FewShotNet:
    """The network of a config: the shared backbone section under the method's head."""
    if cfg.model.method not in TRAIN_METHODS:
        raise FewShotDataError(f"model.method must be one of {list(TRAIN_METHODS)}, got {cfg.model.method!r}")
    backbone = build_backbone(cfg.model.backbone, out_indices=(4,), load_weights=load_weights)
    head = TRAIN_METHODS[cfg.model.method]
    return FewShotNet(backbone, head=head, num_classes=num_classes, cosine_scale=cfg.model.cosine_scale)


def base_num_classes(cfg: FewShotConfig, split_data: SplitData) -> int:
    """Classes seen by the base-training head: base classes times rotations."""
    return len(split_data.split["base"]) * max(1, len(cfg.data.rotations))


@register_task
class FewShotTask(Task):
    """Baseline / Baseline++ / ProtoNet base training (see `FewShotModelConfig.method`)."""

    name = "fewshot"
    config_cls = FewShotConfig
    default_best_metric = "val_acc"
    best_mode = "max"
    # Few-shot predictions come from a support set through an evaluation method (tools/eval_fewshot.py);
    # an exported network alone would not be the few-shot classifier.
    exportable = False

    def __init__(self, cfg: FewShotConfig):
        super().__init__(cfg)
        validate_config(cfg)  # every bad value fails here, before data, model or run folder exist
        self.episodic = cfg.model.method == "protonet"
        self.train_spec = EpisodeSpec(
            cfg.data.n_way, cfg.data.k_shot, cfg.data.q_query, cfg.train.seed, cfg.data.same_group
        )
        self.val_spec = EpisodeSpec(
            cfg.data.val_n_way, cfg.data.val_k_shot, cfg.data.val_q_query, cfg.data.val_seed
        )
        self._split_data: SplitData | None = None
        self._loaded_head_classes: int | None = None  # set when rebuilt from a checkpoint alone
        self._head_classes: int | None = None  # outputs of the head build_model made, once it has

    @property
    def uses_val(self) -> bool:
        return self.cfg.data.val_episodes > 0

    @property
    def split_data(self) -> SplitData:
        """The dataset (files listed, no image opened) and its split, checked for usable part sizes."""
        if self._split_data is None:
            split_data = load_split_data(self.cfg.data, check_headers=False)
            check_split_sizes(split_data, self.cfg.data, self.uses_val)
            self._split_data = split_data
        return self._split_data

    @property
    def channels(self) -> int:
        """Channels images are read with: the backbone's input channels."""
        return self.cfg.model.backbone.in_chans

    def build_model(self, pretrained: bool = True) -> nn.Module:
        loaded = self._loaded_head_classes
        self._head_classes = loaded if loaded is not None else base_num_classes(self.cfg, self.split_data)
        return build_net_from_config(self.cfg, self._head_classes, load_weights=pretrained)

    def model_signature(self) -> dict:
        """The model section without what only initialises or trains (the tensor check sizes the head)."""
        return model_signature(self.cfg.model)

    def meta_from_state(self, state: dict) -> dict:
        """Older checkpoints: as many numbered base classes as the head has rows (none for ProtoNet)."""
        rows = state.get("head.weight")
        rotations = max(1, len(self.cfg.data.rotations))
        count = 0 if rows is None else len(rows) // rotations
        return {
            "base_classes": [f"class{i}" for i in range(count)],
            "rotations": list(self.cfg.data.rotations),
        }

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Older configs: backbone keys into model.backbone, data.channels as its in_chans, the
        data.augment flag as the jitter it switched on."""
        upgraded = upgrade_model_section(config)
        data = dict(upgraded.get("data") or {})
        if "channels" in data:
            upgraded["model"]["backbone"]["in_chans"] = data.pop("channels")
        if isinstance(data.get("augment"), bool):
            data["augment"] = LEGACY_AUGMENT if data["augment"] else {}
        return {**upgraded, "data": data}

    # ------------------------------------------------------------------------------ checkpoint meta

    def checkpoint_meta(self) -> dict:
        """The split of the run; base classes in the head's label order (class-major over rotations)."""
        split = self.split_data.split
        return {
            "base_classes": list(self.split_data.part("base").class_names),
            "val_classes": sorted(split["val"]),
            "novel_classes": sorted(split["novel"]),
            "rotations": list(self.cfg.data.rotations),
        }

    def adopt_checkpoint_meta(self, meta: dict, source: str, purpose: str) -> None:
        """Resume / eval on the checkpoint's split (its base classes are the head's); log for weights.

        The seeded split changes when the dataset gains or loses a class, so the split the config gives
        now may not be the one the weights were trained on.

        Raises:
            FewShotDataError: (resume, eval) a class of the checkpoint's split is not in data.root, the
                rotations differ, or the network was already built for another number of base classes.
        """
        if "base_classes" not in meta:
            return  # a checkpoint from before splits were stored
        if purpose == "load":  # rebuilding from the file alone: the head has the checkpoint's classes
            self._loaded_head_classes = len(meta["base_classes"]) * max(1, len(meta.get("rotations", [])))
            return
        saved = {
            "base": list(meta["base_classes"]),
            "val": list(meta.get("val_classes", [])),
            "novel": list(meta.get("novel_classes", [])),
        }
        current = self.split_data
        if purpose == "weights":
            shared = len(set(saved["base"]) & set(current.split["base"]))
            log.info(
                "%s was base-trained on %d classes, %d of them among this run's %d base classes",
                source,
                len(saved["base"]),
                shared,
                len(current.split["base"]),
            )
            return
        self._check_rotations(meta, source)
        missing = [c for part in saved.values() for c in part if c not in current.index.class_names]
        if missing:
            raise FewShotDataError(
                f"{source} was trained on classes that {current.index.root} lacks ({missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}): point data.root at the dataset it was trained on"
            )
        if any(sorted(saved[k]) != sorted(current.split[k]) for k in SPLIT_NAMES):
            log.warning(
                "%s: using its class split (%s) instead of the one %s gives now",
                source,
                " / ".join(f"{len(saved[k])} {k}" for k in SPLIT_NAMES),
                describe_split(self.cfg.data),
            )
        adopted = SplitData(current.index, saved)
        self._check_head_size(adopted, source)
        self._split_data = adopted

    def _check_rotations(self, meta: dict, source: str) -> None:
        saved = list(meta.get("rotations", []))
        if saved != list(self.cfg.data.rotations):
            raise FewShotDataError(
                f"data.rotations={list(self.cfg.data.rotations)} but {source} was trained with {saved}: "
                "the head's classes are (class, rotation) pairs, so set the same rotations"
            )

    def _check_head_size(self, adopted: SplitData, source: str) -> None:
        """The network is built before a checkpoint is read: its head must fit the adopted base classes."""
        wanted = base_num_classes(self.cfg, adopted)
        if self.episodic or self._head_classes in (None, wanted):
            return
        run_split = Path(self.cfg.output_dir) / "split.json"
        raise FewShotDataError(
            f"{source} has a head for {wanted} base classes but {describe_split(self.cfg.data)} gives "
            f"{self._head_classes} now: set data.split_file={run_split} (the run's split) to use its split"
        )

    # --------------------------------------------------------------------------------- data sets

    def _val_dataset(self):
        """The validation classes' dataset (and `self.val_index`), or None when the run validates not."""
        d = self.cfg.data
        if not (self.split_data.split["val"] and self.uses_val):
            return None
        self.val_index = self.split_data.part("val")
        validate_spec(self.val_index, self.val_spec)
        return dataset_from_index(
            self.val_index, build_transform(d.image_size, self.channels), self.channels, d.cache_images
        )

    def build_datasets(self):
        """Base-class training set (rotated / episodic as configured) and the val-class set.

        Every image header of the dataset is checked first, novel classes included, so that a bad file
        fails now and not at the evaluation after training.
        """
        d = self.cfg.data
        check_image_headers([path for path, _ in self.split_data.index.samples()])
        base = self.split_data.part("base")
        train = dataset_from_index(
            base, build_transform(d.image_size, self.channels, d.augment), self.channels, d.cache_images
        )
        self.train_index, self.train_id_map = base, None
        if d.rotations:
            train = RotatedClasses(train, d.rotations)
            self.train_index, self.train_id_map = rotated_index(base, len(d.rotations))
        if self.episodic:
            validate_spec(self.train_index, self.train_spec)
        val = self._val_dataset()
        self._write_split()
        return train, val

    def build_eval_dataset(self):
        """The val-class set alone (--eval-only): only the val images' headers are opened."""
        val = self._val_dataset()
        if val is not None:
            check_image_headers(val.paths)
        return val

    def _write_split(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        out = Path(self.cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "root": str(self.split_data.index.root),
            "fractions": list(self.cfg.data.split_fractions),
            "seed": self.cfg.data.split_seed,
            "by": self.cfg.data.split_by,
        }
        save_split(out / "split.json", self.split_data.split, meta)

    def train_batch_sampler(self, dataset, batch_size: int, shuffle_seed: int):
        if not self.episodic:
            return None
        distributed = dist.is_available() and dist.is_initialized()
        return EpisodeBatchSampler(
            self.train_index,
            EpisodeSpec(
                self.train_spec.n_way,
                self.train_spec.k_shot,
                self.train_spec.q_query,
                shuffle_seed,
                self.train_spec.same_group,
            ),
            self.cfg.data.episodes_per_epoch,
            id_map=self.train_id_map,
            rank=dist.get_rank() if distributed else 0,
            world_size=dist.get_world_size() if distributed else 1,
        )

    def training_step(self, model, batch, device):
        images, labels = batch
        images = images.to(device, non_blocking=True)
        if not self.episodic:
            labels = labels.to(device, non_blocking=True)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            return {"loss": loss, "acc": (logits.argmax(1) == labels).float().mean().detach()}
        # Episode layout from EpisodeBatchSampler: N*K support then N*Q query images, class-major.
        n, k, q = self.train_spec.n_way, self.train_spec.k_shot, self.train_spec.q_query
        features = model(images).float()
        support_labels = torch.arange(n, device=device).repeat_interleave(k)
        query_labels = torch.arange(n, device=device).repeat_interleave(q)
        logits = prototype_logits(features[: n * k], support_labels, features[n * k :], n)
        loss = F.cross_entropy(logits, query_labels)
        return {"loss": loss, "acc": (logits.argmax(1) == query_labels).float().mean().detach()}

    @torch.no_grad()
    def evaluate(self, model, loader, device, run_dir: Path, epoch: int) -> dict[str, float]:
        # Val images are embedded once, then the same seeded episodes are scored every evaluation.
        images = torch.cat([batch[0] for batch in loader])
        episodes = sample_episodes(self.val_index, self.val_spec, self.cfg.data.val_episodes)
        results = evaluate_episodes(ProtoNet(), with_views(model, self.cfg.eval.tta), images, episodes)
        summary = {"val_acc": results.mean, "val_ci95": results.interval}
        with open(Path(run_dir) / "val_episodes.jsonl", "a") as handle:
            handle.write(json.dumps({"epoch": epoch, **summary}) + "\n")
        return summary

    # ----------------------------------------------------------------------------------- deployment

    def input_size(self) -> tuple[int, int]:
        return (self.cfg.data.image_size, self.cfg.data.image_size)

    def analysis_samples(self, split: str, count: int) -> SampleGrid:
        """One episode of the base ("train") or val classes: a row per class, support shots then queries.

        The episode is kept readable (at most 5 ways and 3 queries); its size, not `count`, sets the grid.
        """
        d = self.cfg.data
        split_data = self._split_data or load_split_data(d, check_headers=False)
        index = split_data.part("base" if split == "train" else "val")
        spec = EpisodeSpec(min(d.n_way, 5), d.k_shot, min(d.q_query, 3), seed=d.val_seed)
        episode = sample_episodes(index, spec, 1)[0]
        samples = index.samples()
        pictures, titles = [], []
        for way in range(spec.n_way):
            support = list(episode.support[way * spec.k_shot : (way + 1) * spec.k_shot])
            query = list(episode.query[way * spec.q_query : (way + 1) * spec.q_query])
            pictures += [read_image(samples[i][0], 3) for i in support + query]
            titles += ["support"] * len(support) + ["query"] * len(query)
        row_titles = [index.class_names[c] for c in episode.classes]
        return SampleGrid(pictures, titles, columns=spec.k_shot + spec.q_query, row_titles=row_titles)
