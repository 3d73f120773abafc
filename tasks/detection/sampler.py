"""Aspect-ratio grouped batching.

torchvision pads every image of a batch to the largest height and width; mixing portrait and landscape
images wastes most of that padding. torchvision ships this sampler only in its reference scripts (not in
the package), hence this small version, which also shards across DDP ranks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


def aspect_ratio_groups(aspect_ratios: Sequence[float], bins: Sequence[float] = (1.0,)) -> list[int]:
    """Group index of each aspect ratio (width / height); ``bins`` are the boundaries between groups."""
    edges = sorted(bins)
    return [sum(ratio >= edge for edge in edges) for ratio in aspect_ratios]


class GroupedBatchSampler(Sampler[list[int]]):
    """Yields batches whose images all fall in the same aspect-ratio group.

    Every index appears exactly once per epoch (on one rank); the leftovers of each group, fewer than a
    batch, are merged into mixed batches at the end so no image is skipped. Call `set_epoch` to reshuffle.

    Args:
        group_ids: group of each dataset index (see `aspect_ratio_groups`).
        batch_size: images per batch (per rank).
        seed: shuffling seed; the order depends only on (seed, epoch).
        num_replicas: number of DDP ranks; each gets the same number of batches.
        rank: this rank.
        drop_last: drop the last incomplete batch.
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.group_ids)))
        rng.shuffle(order)
        buckets: dict[int, list[int]] = {}
        batches, leftovers = [], []
        for idx in order:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                batches.append(bucket[:])
                bucket.clear()
        for bucket in buckets.values():
            leftovers.extend(bucket)
        for i in range(0, len(leftovers), self.batch_size):
            batches.append(leftovers[i : i + self.batch_size])
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(self)
        if self.num_replicas > 1 and batches:
            # Pad by repeating batches so every rank runs the same number of steps (as DistributedSampler).
            total = per_rank * self.num_replicas
            batches = (batches * math.ceil(total / len(batches)))[:total]
        yield from batches[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        n = len(self._all_batches())
        return math.ceil(n / self.num_replicas)
