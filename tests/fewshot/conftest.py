"""Tiny synthetic few-shot data: each class is a random 8x8 binary pattern, upsampled, plus noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.fewshot.model import build_fewshot_net

IMAGE_SIZE = 32


def make_class_tree(
    root: Path, groups: int = 2, classes: int = 4, images: int = 6, size: int = IMAGE_SIZE, seed: int = 0
) -> Path:
    """Write root/g<i>/c<j>/<k>.png (nested) or root/c<j>/<k>.png when groups == 0."""
    rng = np.random.default_rng(seed)
    for g in range(max(groups, 1)):
        for c in range(classes):
            folder = root / (f"g{g}/c{c}" if groups else f"c{c}")
            write_class_images(folder, rng, images, size)
    return root


def write_class_images(folder: Path, rng: np.random.Generator, images: int, size: int = IMAGE_SIZE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pattern = np.kron(rng.integers(0, 2, (8, 8)), np.ones((size // 8, size // 8))) * 200
    for k in range(images):
        noisy = np.clip(pattern + rng.integers(0, 55, pattern.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{k}.png")


@pytest.fixture
def nested_tree(tmp_path) -> Path:
    """2 groups x 4 classes x 6 images, 32x32 grayscale."""
    return make_class_tree(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_net():
    """A random-init resnet18 FewShotNet for 1-channel 32x32 input (default stem: 1x1 at layer4)."""
    torch.manual_seed(0)
    return build_fewshot_net("resnet18", in_chans=1, head="none").eval()


@pytest.fixture
def make_tree():
    """The `make_class_tree` helper (importlib mode: test modules cannot import conftest)."""
    return make_class_tree


@pytest.fixture(scope="session")
def shared_tree(tmp_path_factory) -> Path:
    """A session-wide nested tree (2 groups x 4 classes x 6 images) for the slower tool tests; read-only."""
    return make_class_tree(tmp_path_factory.mktemp("fewshot_shared") / "data")


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """Overrides that make a few-shot config train in seconds on the tiny trees (fp32, no plots)."""
    return [
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.batch_size=8",
        "train.num_workers=0",
        "train.tensorboard=false",
        "train.amp=off",  # exact comparisons are fp32 (amp=auto is bf16 on CPUs with native bf16)
        "train.plots=false",
        "device=cpu",
        "data.split_fractions=[0.5,0.25,0.25]",
        "data.val_n_way=2",
        "data.val_k_shot=1",
        "data.val_q_query=2",
        "data.val_episodes=4",
    ]
