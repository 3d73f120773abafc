"""Base training of few-shot methods as an engine `Task`: classification on base classes (Baseline,
Baseline++) or episodic training (ProtoNet); validation = nearest-prototype episodes on val classes."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tasks.engine.task import Task

from .config import FewShotConfig
from .data import (
    ClassFolderIndex,
    FewShotDataError,
    RotatedClasses,
    build_transform,
    check_image_headers,
    dataset_from_index,
    rotated_index,
    scan_class_folders,
)
from .episodes import EpisodeBatchSampler, EpisodeSpec, sample_episodes, validate_spec
from .evaluation import evaluate_episodes
from .heads import prototype_logits
from .methods import ProtoNet
from .model import FewShotNet, build_fewshot_net
from .splits import load_split, save_split, split_classes

TRAIN_METHODS = {"baseline": "linear", "baseline++": "cosine", "protonet": "none"}


@dataclass
class SplitData:
    """The scanned dataset and its class-level split, as indices."""

    index: ClassFolderIndex
    split: dict[str, list[str]]

    def part(self, name: str) -> ClassFolderIndex:
        if not self.split[name]:
            raise FewShotDataError(f"split part {name!r} of {self.index.root} has no classes")
        return self.index.subset(self.split[name])


def load_split_data(data_cfg) -> SplitData:
    """Scan `data_cfg.root`, check every image header, and split its classes (file or seeded fractions)."""
    if not data_cfg.root:
        raise FewShotDataError("data.root is empty: set it to a class-folder dataset (data.root=DIR)")
    index = scan_class_folders(data_cfg.root)
    check_image_headers([path for path, _ in index.samples()])
    if data_cfg.split_file:
        split = load_split(data_cfg.split_file)
        index.subset([c for part in split.values() for c in part])  # unknown classes -> clear error
    else:
        split = split_classes(index, data_cfg.split_fractions, data_cfg.split_seed, data_cfg.split_by)
    return SplitData(index, split)


def build_net_from_config(cfg: FewShotConfig, num_classes: int) -> FewShotNet:
    """The network of a config (also used by tools/eval_fewshot.py to rebuild a checkpoint's model)."""
    if cfg.model.method not in TRAIN_METHODS:
        raise FewShotDataError(f"model.method must be one of {list(TRAIN_METHODS)}, got {cfg.model.method!r}")
    return build_fewshot_net(
        cfg.model.arch,
        weights=cfg.model.weights or None,
        stem_type=cfg.model.stem_type,
        in_chans=cfg.data.channels,
        head=TRAIN_METHODS[cfg.model.method],
        num_classes=num_classes,
        cosine_scale=cfg.model.cosine_scale,
    )


def base_num_classes(cfg: FewShotConfig, split_data: SplitData) -> int:
    """Classes seen by the base-training head: base classes times rotations."""
    return len(split_data.split["base"]) * max(1, len(cfg.data.rotations))


class FewShotTask(Task):
    """Baseline / Baseline++ / ProtoNet base training (see `FewShotModelConfig.method`)."""

    name = "fewshot"
    default_best_metric = "val_acc"
    best_mode = "max"

    def __init__(self, cfg: FewShotConfig):
        super().__init__(cfg)
        if cfg.model.method not in TRAIN_METHODS:
            raise FewShotDataError(
                f"model.method must be one of {list(TRAIN_METHODS)}, got {cfg.model.method!r}"
            )
        self.episodic = cfg.model.method == "protonet"
        self.train_spec = EpisodeSpec(
            cfg.data.n_way, cfg.data.k_shot, cfg.data.q_query, cfg.train.seed, cfg.data.same_group
        )
        self.val_spec = EpisodeSpec(
            cfg.data.val_n_way, cfg.data.val_k_shot, cfg.data.val_q_query, cfg.data.val_seed
        )

    @functools.cached_property
    def split_data(self) -> SplitData:
        return load_split_data(self.cfg.data)

    def build_model(self) -> nn.Module:
        return build_net_from_config(self.cfg, base_num_classes(self.cfg, self.split_data))

    def build_datasets(self):
        d = self.cfg.data
        base = self.split_data.part("base")
        train = dataset_from_index(
            base, build_transform(d.image_size, d.channels, d.augment), d.channels, d.cache_images
        )
        self.train_index, self.train_id_map = base, None
        if d.rotations:
            train = RotatedClasses(train, d.rotations)
            self.train_index, self.train_id_map = rotated_index(base, len(d.rotations))
        if self.episodic:
            validate_spec(self.train_index, self.train_spec)
        val = None
        if self.split_data.split["val"] and d.val_episodes > 0:
            self.val_index = self.split_data.part("val")
            validate_spec(self.val_index, self.val_spec)
            val = dataset_from_index(
                self.val_index, build_transform(d.image_size, d.channels), d.channels, d.cache_images
            )
        self._write_split()
        return train, val

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
        results = evaluate_episodes(ProtoNet(), model, images, episodes)
        summary = {"val_acc": results.mean, "val_ci95": results.interval}
        with open(Path(run_dir) / "val_episodes.jsonl", "a") as handle:
            handle.write(json.dumps({"epoch": epoch, **summary}) + "\n")
        return summary
