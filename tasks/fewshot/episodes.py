"""Seeded N-way K-shot Q-query episodes over a `ClassFolderIndex`, saved to JSON and replayed exactly.

Episodes are drawn up front from one `numpy.random.Generator(seed)` so that the list is a pure function of
(class list, file lists, N, K, Q, seed, same_group); the JSON stores class names and file names, so a replay
does not depend on numpy's generator or on the folder listing order of another machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import ClassFolderIndex, FewShotDataError

EPISODE_FORMAT = "fewshot-episodes/1"


@dataclass(frozen=True)
class Episode:
    """One task: `classes[i]` is episode label i; support/query hold global sample ids, class-major.

    Attributes:
        classes: class indices in the index the episode was drawn from.
        support: K sample ids per class, class 0 first.
        query: Q sample ids per class, class 0 first.
    """

    classes: tuple[int, ...]
    support: tuple[int, ...]
    query: tuple[int, ...]

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def support_labels(self) -> torch.Tensor:
        return torch.arange(self.n_way).repeat_interleave(len(self.support) // self.n_way)

    def query_labels(self) -> torch.Tensor:
        return torch.arange(self.n_way).repeat_interleave(len(self.query) // self.n_way)


@dataclass(frozen=True)
class EpisodeSpec:
    """How episodes are drawn (saved with them)."""

    n_way: int = 5
    k_shot: int = 1
    q_query: int = 15
    seed: int = 0
    same_group: bool = False


def validate_spec(index: ClassFolderIndex, spec: EpisodeSpec) -> None:
    """Fail before sampling when `index` cannot give `spec`'s episodes; errors name the class or value."""
    for name, value in (("n_way", spec.n_way), ("k_shot", spec.k_shot), ("q_query", spec.q_query)):
        if value < 1:
            raise FewShotDataError(f"{name} must be >= 1, got {value}")
    if spec.n_way > index.num_classes:
        raise FewShotDataError(
            f"n_way={spec.n_way} is larger than the number of classes ({index.num_classes}) in {index.root}"
        )
    need = spec.k_shot + spec.q_query
    for name, files in zip(index.class_names, index.files):
        if len(files) < need:
            raise FewShotDataError(
                f"class {name!r} has {len(files)} images but k_shot + q_query = "
                f"{spec.k_shot} + {spec.q_query} "
                f"= {need} are needed ({index.root / name})"
            )
    if spec.same_group:
        sizes = {g: index.groups.count(g) for g in set(index.groups)}
        if max(sizes.values()) < spec.n_way:
            raise FewShotDataError(
                f"same_group episodes need a group with >= n_way={spec.n_way} classes; largest group "
                f"{max(sizes, key=sizes.get)!r} has {max(sizes.values())}"
            )


def sample_episodes(index: ClassFolderIndex, spec: EpisodeSpec, num_episodes: int) -> list[Episode]:
    """Draw `num_episodes` episodes; the same arguments always give the same list.

    With `spec.same_group`, each episode first picks a group (uniformly among groups with >= N classes)
    and then N of its classes, as in the within-alphabet Omniglot protocol of Lake et al. (2015).
    """
    validate_spec(index, spec)
    if num_episodes < 1:
        raise FewShotDataError(f"num_episodes must be >= 1, got {num_episodes}")
    rng = np.random.default_rng(spec.seed)
    need = spec.k_shot + spec.q_query
    by_group: dict[str, list[int]] = {}
    for class_idx, group in enumerate(index.groups):
        by_group.setdefault(group, []).append(class_idx)
    eligible_groups = sorted(g for g, members in by_group.items() if len(members) >= spec.n_way)
    episodes = []
    for _ in range(num_episodes):
        if spec.same_group:
            pool = by_group[eligible_groups[rng.integers(len(eligible_groups))]]
        else:
            pool = list(range(index.num_classes))
        classes = [pool[i] for i in rng.choice(len(pool), spec.n_way, replace=False)]
        support, query = [], []
        for class_idx in classes:
            picks = rng.choice(len(index.files[class_idx]), need, replace=False)
            ids = [index.sample_id(class_idx, int(i)) for i in picks]
            support += ids[: spec.k_shot]
            query += ids[spec.k_shot :]
        episodes.append(Episode(tuple(int(c) for c in classes), tuple(support), tuple(query)))
    return episodes


def save_episodes(
    path: str | os.PathLike, index: ClassFolderIndex, spec: EpisodeSpec, episodes: list[Episode]
):
    """Write episodes as JSON with class names and file paths relative to the dataset root."""
    paths = index.relative_paths()
    record = {
        "format": EPISODE_FORMAT,
        "root": str(index.root),
        "spec": asdict(spec),
        "episodes": [
            {
                "classes": [index.class_names[c] for c in ep.classes],
                "support": [paths[i] for i in ep.support],
                "query": [paths[i] for i in ep.query],
            }
            for ep in episodes
        ],
    }
    with open(path, "w") as handle:
        json.dump(record, handle, separators=(",", ":"))


def load_episodes(path: str | os.PathLike, index: ClassFolderIndex) -> tuple[EpisodeSpec, list[Episode]]:
    """Replay episodes saved by `save_episodes` on `index` (the same images, possibly another machine).

    Raises:
        FewShotDataError: wrong format, or a class or file of the saved episodes missing from `index`.
    """
    with open(path) as handle:
        record = json.load(handle)
    if not isinstance(record, dict) or record.get("format") != EPISODE_FORMAT:
        raise FewShotDataError(f"{path} is not an episode file (expected format {EPISODE_FORMAT!r})")
    spec = EpisodeSpec(**record["spec"])
    class_pos = {name: i for i, name in enumerate(index.class_names)}
    sample_pos = {p: i for i, p in enumerate(index.relative_paths())}
    episodes = []
    for number, item in enumerate(record["episodes"]):
        for name in item["classes"]:
            if name not in class_pos:
                raise FewShotDataError(
                    f"{path}: episode {number} uses class {name!r}, absent from {index.root}"
                )
        for rel in item["support"] + item["query"]:
            if rel not in sample_pos:
                raise FewShotDataError(
                    f"{path}: episode {number} uses image {rel!r}, absent from {index.root}"
                )
        episodes.append(
            Episode(
                tuple(class_pos[n] for n in item["classes"]),
                tuple(sample_pos[p] for p in item["support"]),
                tuple(sample_pos[p] for p in item["query"]),
            )
        )
    return spec, episodes


class EpisodeBatchSampler(torch.utils.data.Sampler):
    """Yields one episode per batch (support ids, then query ids) for episodic (ProtoNet) training.

    A fresh seed per epoch (`set_epoch`, as `DistributedSampler`) gives new episodes every epoch while
    keeping runs reproducible; under DDP each rank takes every world_size-th episode.

    Args:
        index: classes to draw from.
        spec: episode shape and seed.
        episodes_per_epoch: episodes (optimiser steps) per epoch, over all ranks.
        id_map: optional map from `index` sample ids to dataset positions (rotated classes).
        rank, world_size: this process's share of the episodes.
    """

    def __init__(
        self,
        index: ClassFolderIndex,
        spec: EpisodeSpec,
        episodes_per_epoch: int,
        id_map: list[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        validate_spec(index, spec)
        if episodes_per_epoch < world_size:
            raise FewShotDataError(f"episodes_per_epoch={episodes_per_epoch} < world size {world_size}")
        self.index, self.spec, self.episodes_per_epoch = index, spec, episodes_per_epoch
        self.id_map, self.rank, self.world_size = id_map, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.episodes_per_epoch, self.world_size))

    def __iter__(self):
        seed = int(np.random.SeedSequence([self.spec.seed, self.epoch]).generate_state(1)[0])
        spec = EpisodeSpec(self.spec.n_way, self.spec.k_shot, self.spec.q_query, seed, self.spec.same_group)
        episodes = sample_episodes(self.index, spec, self.episodes_per_epoch)
        for episode in episodes[self.rank :: self.world_size]:
            ids = list(episode.support) + list(episode.query)
            yield [self.id_map[i] for i in ids] if self.id_map is not None else ids
