"""Tiny synthetic image datasets written to tmp_path (the suite never needs /work/shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = {"ants": (200, 40, 40), "bees": (40, 40, 200), "wasps": (40, 200, 40)}


def write_image_folder(
    root: Path, per_class: int = 6, size: int = 24, classes=("ants", "bees"), seed=0
) -> Path:
    """ROOT/<class>/<i>.png with a class colour plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.array(COLORS[name]) + rng.normal(0, 30, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{name}_{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "images")


def tiny_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    """Overrides that make any classification config run in about a second."""
    return [
        f"data.root={root}",
        f"output_dir={out}",
        "data.image_size=32",
        "data.resize_size=32",
        "train.epochs=1",
        "train.batch_size=4",
        "train.num_workers=0",
        "train.warmup_epochs=0",
        "train.channels_last=false",
        "train.plots=false",
        "train.tensorboard=false",
        "train.amp=off",  # exact comparisons are fp32 (amp=auto is bf16 on CPUs with native bf16)
        "device=cpu",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny():
    """The `tiny_overrides` helper (importlib mode: test modules cannot import conftest)."""
    return tiny_overrides


@pytest.fixture(scope="session")
def make_folder():
    """The `write_image_folder` helper; session-scoped so that module-scoped fixtures can use it."""
    return write_image_folder
