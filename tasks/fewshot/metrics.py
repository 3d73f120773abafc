"""Episodic evaluation: mean accuracy with a 95% interval, embedding every image once where that is exact."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .episodes import Episode
from .model import FewShotNet


def mean_and_interval(accuracies: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-interval 1.96 * std / sqrt(n).

    std is the population std (numpy's default, ddof=0) as in the evaluation code of Chen et al. and
    ProtoNet, so numbers compare with theirs; for n >= 600 the ddof choice changes the interval by < 0.1%.
    """
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no episode accuracies to summarise")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))


@torch.no_grad()
def frozen_activations(
    net: FewShotNet, images: torch.Tensor, level: int, batch_size: int = 256
) -> torch.Tensor:
    """Outputs of backbone levels 0..`level` in eval mode (level 4: pooled features; -1: the images).

    These are the parts of the network a method does not train, so their outputs can be computed once.
    """
    if level < 0:
        return images
    if level >= 4:
        from .model import embed_images

        return embed_images(net, images, batch_size)
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            for stage in range(level + 1):
                x = net.backbone.forward_level(stage, x)
            out.append(x.cpu())
    finally:
        net.train(was_training)
    return torch.cat(out)


def method_input_level(method) -> int:
    """Which level's activations a method consumes: 4 (pooled features) or its frozen prefix level."""
    return getattr(method, "prefix_level", 4)


@dataclass
class EpisodeResults:
    """Per-episode accuracies and predictions plus timing of one evaluation run."""

    accuracies: list[float]
    predictions: list[torch.Tensor]
    seconds: float
    embed_seconds: float
    num_images_embedded: int
    extra: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return mean_and_interval(self.accuracies)[0]

    @property
    def interval(self) -> float:
        return mean_and_interval(self.accuracies)[1]

    @property
    def episodes_per_second(self) -> float:
        return len(self.accuracies) / max(self.seconds, 1e-12)

    def summary(self) -> dict:
        mean, interval = mean_and_interval(self.accuracies)
        return {
            "episodes": len(self.accuracies),
            "accuracy": mean,
            "ci95": interval,
            "seconds": self.seconds,
            "embed_seconds": self.embed_seconds,
            "images_embedded": self.num_images_embedded,
            "episodes_per_second": self.episodes_per_second,
            **self.extra,
        }


def evaluate_episodes(
    method,
    net: FewShotNet,
    images: torch.Tensor,
    episodes: Sequence[Episode],
    *,
    cache: bool = True,
    batch_size: int = 256,
    progress=None,
) -> EpisodeResults:
    """Run `method` on every episode and score the query predictions.

    Args:
        method: a `ProtoNet`, `SimpleShot` or `HeadTransfer`.
        net: the trained network.
        images: all images of the index the episodes were drawn from, by global sample id.
        episodes: the episodes (e.g. from `sample_episodes` or `load_episodes`).
        cache: compute the method's fixed activations (pooled features, or the frozen prefix of a
            fine-tuning method) once for all images used by any episode. Without it, every episode runs
            the network on its own images; results are the same up to float rounding.
        batch_size: embedding batch size.
        progress: optional callable wrapping a sized iterable (e.g. a tqdm bar) to show progress.
    """
    start = time.perf_counter()
    level = method_input_level(method)
    embed_seconds, embedded = 0.0, 0
    lookup = None
    if cache:
        used = sorted({i for ep in episodes for i in (*ep.support, *ep.query)})
        t0 = time.perf_counter()
        activations = frozen_activations(net, images[used], level, batch_size)
        embed_seconds = time.perf_counter() - t0
        embedded = len(used)
        position = torch.full((len(images),), -1, dtype=torch.long)
        position[used] = torch.arange(len(used))
        lookup = (activations, position)
    accuracies, predictions = [], []
    if lookup is not None and getattr(method, "predict_batch", None) and method.uses_frozen_features:
        predictions = _predict_batched(method, lookup, episodes, progress)
    else:
        for number, episode in enumerate(progress(episodes) if progress else episodes):
            support_ids = torch.tensor(episode.support)
            query_ids = torch.tensor(episode.query)
            if lookup is not None:
                activations, position = lookup
                support, query = activations[position[support_ids]], activations[position[query_ids]]
            else:
                t0 = time.perf_counter()
                support = frozen_activations(net, images[support_ids], level, batch_size)
                query = frozen_activations(net, images[query_ids], level, batch_size)
                embed_seconds += time.perf_counter() - t0
                embedded += len(support_ids) + len(query_ids)
            labels = episode.support_labels()
            predictions.append(_predict(method, support, labels, query, episode.n_way, number).argmax(1))
    for episode, predicted in zip(episodes, predictions):
        accuracies.append((predicted == episode.query_labels()).float().mean().item())
    return EpisodeResults(accuracies, predictions, time.perf_counter() - start, embed_seconds, embedded)


def _predict_batched(method, lookup, episodes, progress, chunk: int = 200) -> list[torch.Tensor]:
    """Episodes of one shape in chunks through `method.predict_batch` (head-only transfer)."""
    activations, position = lookup
    predictions: list[torch.Tensor] = []
    starts = range(0, len(episodes), chunk)
    for start in progress(starts) if progress else starts:
        group = episodes[start : start + chunk]
        shapes = {(ep.n_way, len(ep.support), len(ep.query)) for ep in group}
        if len(shapes) > 1:
            raise ValueError(f"batched transfer needs episodes of one shape, got {sorted(shapes)}")
        support = activations[position[torch.tensor([ep.support for ep in group])]]
        query = activations[position[torch.tensor([ep.query for ep in group])]]
        labels = torch.stack([ep.support_labels() for ep in group])
        indices = list(range(start, start + len(group)))
        logits = method.predict_batch(support, labels, query, group[0].n_way, indices)
        predictions += list(logits.argmax(dim=2))
    return predictions


def _predict(method, support, support_labels, query, n_way, episode_index):
    if hasattr(method, "settings"):  # HeadTransfer: per-episode seed
        return method.predict(support, support_labels, query, n_way, episode_index=episode_index)
    return method.predict(support, support_labels, query, n_way)
