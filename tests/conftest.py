"""Suite-wide settings: small thread pools (CI has 2 cores), seeded randomness and clean global flags."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

# Test folders whose models are tiny (32 px images, toy networks): their ops are microseconds long, and a
# second OpenMP thread on a loaded 2-core runner only adds waiting (measured 17x slower in few-shot).
ONE_THREAD_FOLDERS = {"classification", "engine", "fewshot"}


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _threads_for_the_folder(request):
    """One intra-op thread in ONE_THREAD_FOLDERS, restored afterwards."""
    if Path(request.node.path).parent.name not in ONE_THREAD_FOLDERS:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _restore_determinism_flags():
    """train.deterministic=true flips process-wide switches; keep them from leaking into other tests."""
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
