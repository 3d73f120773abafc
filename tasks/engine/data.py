"""Samplers and dataset wrappers that make an epoch reproducible from any batch onwards.

Mid-epoch resume needs two things: the same order of samples (a permutation that depends only on the
seed and the epoch, like torch's DistributedSampler) and the same random augmentation of each sample
whatever worker or position loads it. `EpochSeededDataset` seeds the RNGs per sample from
(seed, epoch, index) so augmentation does not depend on worker count or on where the run restarted.
"""

from __future__ import annotations

import itertools
import random
import zlib
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .config import ConfigError


class ResumableDistributedSampler(DistributedSampler):
    """torch's DistributedSampler (also used with a single process) that can start mid-epoch.

    `set_epoch(e)` reshuffles with seed + e exactly as DistributedSampler does; `set_start_index(n)` skips
    the first n indices of this rank's share for the current epoch only.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start_index = 0

    def set_start_index(self, start: int) -> None:
        self.start_index = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start_index, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_index)


class SkipBatches(Sampler):
    """Wrap a task's batch sampler so that an epoch can start after `skip` batches."""

    def __init__(self, batch_sampler: Sampler, skip: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


def sample_seed(seed: int, epoch: int, index) -> int:
    """A 32-bit seed that depends only on (seed, epoch, sample index)."""
    key = index if isinstance(index, int) else zlib.crc32(repr(index).encode())
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, key & 0xFFFFFFFF]).generate_state(1)[0])


class EpochSeededDataset(Dataset):
    """Make each sample's random augmentation a function of (seed, epoch, index).

    The global RNG states are restored after each sample, so loading in the main process
    (num_workers=0) does not disturb the RNG stream used by the model (dropout, mixup).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        seed = sample_seed(self.seed, self.epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getattr__(self, name: str):
        # Forward dataset attributes (classes, ...) but never recurse while unpickling in workers.
        if name in ("dataset", "__setstate__", "__getstate__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_train_loader(
    dataset: Dataset, task: Any, cfg: Any, dist_info: Any, device: torch.device
) -> tuple[DataLoader, Any, EpochSeededDataset]:
    """The resumable training loader: (loader, its sampler, the epoch-seeded dataset it reads).

    Args:
        dataset: the task's training set.
        task: supplies `collate_fn` and, optionally, a custom batch sampler (few-shot episodes).
        cfg: the `train` config section (batch_size, num_workers, seed).
        dist_info: the process's place in the job (`runtime.DistInfo`).
        device: pins memory for CUDA.
    """
    seeded = EpochSeededDataset(dataset, cfg.seed)
    custom = task.train_batch_sampler(dataset, cfg.batch_size, cfg.seed)
    # A private generator: creating a loader iterator must not draw from the global torch RNG, or
    # a resumed run (which creates its iterator after restoring the RNG) would drift.
    common = dict(
        num_workers=cfg.num_workers,
        collate_fn=task.collate_fn,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),
        persistent_workers=False,  # workers must see the dataset's new epoch every epoch
    )
    if custom is not None:
        sampler = SkipBatches(custom)
        return DataLoader(seeded, batch_sampler=sampler, **common), sampler, seeded
    sampler = ResumableDistributedSampler(dataset, dist_info.world_size, dist_info.rank, seed=cfg.seed)
    if sampler.num_samples < 1:
        raise ConfigError("the training set is empty")
    # Drop a ragged last batch (a batch of 1 breaks BatchNorm) unless the set is smaller than a batch.
    drop_last = sampler.num_samples >= cfg.batch_size
    loader = DataLoader(seeded, batch_size=cfg.batch_size, sampler=sampler, drop_last=drop_last, **common)
    return loader, sampler, seeded


def build_val_loader(dataset: Dataset | None, task: Any, cfg: Any, device: torch.device) -> DataLoader | None:
    """The evaluation loader in dataset order (None when there is no validation set)."""
    if dataset is None:
        return None
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        collate_fn=task.collate_fn,
        pin_memory=device.type == "cuda",
    )


def set_start(sampler: Any, batches: int, batch_size: int) -> None:
    """Make the next pass of `sampler` skip the first `batches` batches (mid-epoch resume)."""
    if isinstance(sampler, SkipBatches):
        sampler.skip = batches
    else:
        sampler.set_start_index(batches * batch_size)
