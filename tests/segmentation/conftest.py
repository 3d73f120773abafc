"""Tiny synthetic segmentation datasets written into tmp_path (no real data needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def disc_image(size: int, rng: np.random.Generator, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit grayscale image with bright discs (class 1) and squares (class 2) on noise, and its labels."""
    labels = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] = 1
    if classes > 2:
        y0, x0 = rng.integers(0, size - size // 5, size=2)
        labels[y0 : y0 + size // 5, x0 : x0 + size // 5] = 2
    image = (40 + 80 * labels + rng.normal(0, 10, labels.shape)).clip(0, 255).astype(np.uint8)
    return image, labels


def write_folder_dataset(
    root: Path, n: int = 6, size: int = 48, classes: int = 2, value_scale: int = 255, seed: int = 0
) -> Path:
    """images/*.png + masks/*.png; mask values = class * value_scale (255 -> 0/255 binary masks)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, labels = disc_image(size, rng, classes)
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray((labels * value_scale).astype(np.uint8)).save(root / "masks" / f"img{i}.png")
    return root


@pytest.fixture
def binary_dataset(tmp_path: Path) -> Path:
    """Six 48x48 grayscale images with 0/255 masks."""
    return write_folder_dataset(tmp_path / "binary")


def write_multiclass_dataset(root: Path) -> Path:
    """Six 48x48 images with masks 0/1/2 and a dataset.json manifest grouping them into 3 patients."""
    root = write_folder_dataset(root, classes=3, value_scale=1)
    manifest = {
        "channel_names": {"0": "gray"},
        "labels": {"background": 0, "disc": 1, "square": 2},
        "file_ending": ".png",
        "images_dir": "images",
        "masks_dir": "masks",
        "case_ids": {f"img{i}": f"patient{i // 2}" for i in range(6)},
        "spacing": [0.5, 0.5],
    }
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def multiclass_dataset(tmp_path: Path) -> Path:
    """Six 48x48 images with masks 0/1/2 and a dataset.json manifest grouping them into 3 patients."""
    return write_multiclass_dataset(tmp_path / "multi")


@pytest.fixture(scope="session")
def make_multiclass_dataset():
    """The writer of `multiclass_dataset`, for module-scoped fixtures (tests import nothing from here)."""
    return write_multiclass_dataset


@pytest.fixture
def nifti_dataset(tmp_path: Path) -> Path:
    """Three 32x32x4 NIfTI volumes (nnU-Net layout imagesTr/case_0000.nii.gz, labelsTr/case.nii.gz)."""
    import nibabel as nib

    root = tmp_path / "nifti"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    for c in range(3):
        slices = [disc_image(32, rng) for _ in range(4)]
        image = np.stack([s[0] for s in slices], axis=-1).astype(np.int16) * 4 - 200  # CT-like HU values
        labels = np.stack([s[1] for s in slices], axis=-1).astype(np.uint8)
        labels[..., 0] = 0  # an empty slice
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case{c}_0000.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"case{c}.nii.gz")
    manifest = {"labels": {"background": 0, "organ": 1}, "format": "nifti", "channel_names": {"0": "CT"}}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "segmentation"
TINY = [
    "model.backbone.arch=resnet18",
    "model.backbone.weights=''",
    "model.decoder_channels=[32,16,16,16,16]",
    "data.augment.crop_size=[32,32]",
    "train.epochs=1",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.max_steps_per_epoch=2",
    "train.tensorboard=false",
    "train.amp=off",  # exact comparisons are fp32 (amp=auto is bf16 on CPUs with native bf16)
    "train.plots=false",
    "train.warmup_epochs=0",
    "device=cpu",
    "eval.overlays=0",
]


@pytest.fixture(scope="session")
def tiny_seg_config():
    """``make(config_name, run_dir, *overrides) -> SegmentationConfig``: a shipped config, in seconds."""
    from tasks.engine.config import load_config
    from tasks.segmentation.config import SegmentationConfig

    def make(name: str, run: Path, *overrides: str) -> SegmentationConfig:
        return load_config(CONFIGS / name, [*TINY, f"output_dir={run}", *overrides], SegmentationConfig)

    return make


@pytest.fixture(scope="session")
def train_seg_main():
    """``main(config_name, run_dir, *overrides) -> exit code`` of tools/train_seg.py on a tiny setup."""
    spec = importlib.util.spec_from_file_location("train_seg_tool", ROOT / "tools" / "train_seg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def main(name: str, run: Path, *overrides: str) -> int:
        return module.main([str(CONFIGS / name), *TINY, f"output_dir={run}", *overrides])

    return main
