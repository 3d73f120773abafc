"""What tools/eval_fewshot.py does, as functions: load a trained net, run episodes or one fixed task."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from tasks.engine.loading import load_trained_model

from .config import FewShotConfig
from .data import FewShotDataError, ImageListDataset, dataset_from_index, load_all
from .episodes import EpisodeSpec, load_episodes, sample_episodes, save_episodes
from .fixed_task import load_fixed_task, write_predictions
from .methods import METHODS, FinetuneSettings, build_method
from .metrics import evaluate_episodes, frozen_activations, method_input_level
from .model import FewShotNet, embed_images
from .task import SplitData
from .transforms import build_transform


def channels(cfg: FewShotConfig) -> int:
    """Channels the images are read with: those the backbone takes."""
    return cfg.model.backbone.in_chans


def load_trained_net(checkpoint: str | os.PathLike, device: str = "cpu") -> tuple[FewShotNet, FewShotConfig]:
    """The network of a tools/train_fewshot.py checkpoint and its config, through the one loader.

    The head size comes from the checkpoint (its base classes), so the evaluating machine need not have
    the training data; EMA weights are used when the run kept them.
    """
    trained = load_trained_model(checkpoint)
    return trained.model.to(device).eval(), trained.cfg


def base_feature_mean(net: FewShotNet, cfg: FewShotConfig, split_data: SplitData) -> torch.Tensor:
    """Mean embedding of the base-class images (SimpleShot centring), computed in eval mode."""
    base = split_data.part("base")
    images = load_all(
        dataset_from_index(
            base,
            build_transform(cfg.data.image_size, channels(cfg)),
            channels(cfg),
        )
    )
    return embed_images(net, images).mean(dim=0)


def run_episodes(
    net: FewShotNet,
    cfg: FewShotConfig,
    split_data: SplitData,
    methods: list[str],
    spec: EpisodeSpec,
    num_episodes: int,
    *,
    part: str = "novel",
    replay_file: str | os.PathLike | None = None,
    save_file: str | os.PathLike | None = None,
    finetune: FinetuneSettings | None = None,
    progress=None,
) -> dict:
    """Evaluate `methods` on the same episodes of one split part; returns a JSON-able summary.

    Args:
        replay_file: replay these saved episodes (their spec replaces `spec` and `num_episodes`).
        save_file: write the episodes used here, so that any later run can replay exactly the same tasks.
    """
    index = split_data.part(part) if part != "all" else split_data.index
    if replay_file:
        if not Path(replay_file).is_file():
            raise FewShotDataError(f"episode file {replay_file} does not exist")
        spec, episodes = load_episodes(replay_file, index)
    else:
        episodes = sample_episodes(index, spec, num_episodes)
    if save_file:
        save_episodes(save_file, index, spec, episodes)
    # Head initialisation and batch order follow the episode seed, so a replay reproduces them too.
    finetune = replace(finetune or FinetuneSettings(), seed=spec.seed)
    images = load_all(
        dataset_from_index(
            index,
            build_transform(cfg.data.image_size, channels(cfg)),
            channels(cfg),
        )
    )
    base_mean = base_feature_mean(net, cfg, split_data) if "simpleshot" in methods else None
    results = {"part": part, "classes": index.num_classes, "spec": asdict(spec), "methods": {}}
    for name in methods:
        method = build_method(name, net, base_mean=base_mean, finetune=finetune)
        outcome = evaluate_episodes(method, net, images, episodes, progress=progress)
        summary = outcome.summary()
        if hasattr(method, "settings"):
            summary["finetune"] = asdict(method.settings)
        results["methods"][name] = summary
    return results


def run_fixed_task(
    net: FewShotNet,
    cfg: FewShotConfig,
    method_name: str,
    support_dir: str | os.PathLike,
    query_dir: str | os.PathLike,
    output_csv: str | os.PathLike,
    *,
    finetune: FinetuneSettings | None = None,
    base_mean: torch.Tensor | None = None,
) -> dict:
    """Predict the query images of one task; writes `output_csv` and returns accuracy (None if unlabelled)."""
    if method_name not in METHODS:
        raise FewShotDataError(f"method must be one of {list(METHODS)}, got {method_name!r}")
    task = load_fixed_task(support_dir, query_dir)
    transform = build_transform(cfg.data.image_size, channels(cfg))
    support_images = load_all(
        ImageListDataset(task.support_paths, task.support_labels, transform, channels(cfg))
    )
    query_images = load_all(
        ImageListDataset(task.query_paths, [0] * len(task.query_paths), transform, channels(cfg))
    )
    method = build_method(method_name, net, base_mean=base_mean, finetune=finetune)
    level = method_input_level(method)
    support = frozen_activations(net, support_images, level)
    query = frozen_activations(net, query_images, level)
    labels = torch.tensor(task.support_labels)
    logits = method.predict(support, labels, query, task.n_way)
    accuracy = write_predictions(output_csv, task, logits)
    return {
        "method": method_name,
        "classes": list(task.class_names),
        "support_images": len(task.support_paths),
        "query_images": len(task.query_paths),
        "accuracy": accuracy,
        "predictions": str(output_csv),
    }


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write `data` as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2, default=str)


__all__ = [
    "base_feature_mean",
    "load_trained_net",
    "run_episodes",
    "run_fixed_task",
    "write_json",
]
