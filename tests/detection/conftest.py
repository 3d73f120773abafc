"""Tiny synthetic COCO datasets made on the fly (no real data needed)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Non-contiguous ids on purpose: labels must be mapped to 1..K and back.
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]


def _make_coco(
    root: Path,
    n_images: int = 6,
    sizes=((96, 128), (128, 96)),
    seed: int = 0,
    empty_images: int = 0,
    image_format: str = "png",
) -> dict:
    """Write images with coloured rectangles and a matching annotations.json under ``root``.

    Args:
        root: folder that receives ``images/`` and ``annotations.json``.
        n_images: number of images with objects.
        sizes: (height, width) cycled over the images (portrait and landscape for grouping).
        empty_images: extra images without any object.

    Returns:
        The COCO dictionary written.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n_images + empty_images):
        h, w = sizes[i % len(sizes)]
        pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        image_id = 10 + i  # ids need not start at 1
        if i < n_images:
            for k, cat in enumerate(CATEGORIES):
                bw, bh = (24, 24) if cat["name"] == "square" else (40, 14)
                x = int(rng.integers(0, w - bw))
                y = int(rng.integers(0, h - bh))
                pixels[y : y + bh, x : x + bw] = (220, 40, 40) if k == 0 else (40, 40, 220)
                annotations.append(
                    {
                        "id": len(annotations) + 100,
                        "image_id": image_id,
                        "category_id": cat["id"],
                        "bbox": [x, y, bw, bh],
                        "area": bw * bh,
                        "iscrowd": 0,
                    }
                )
        name = f"img_{i}.{image_format}"
        Image.fromarray(pixels).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    data = {"images": images, "annotations": annotations, "categories": [dict(c) for c in CATEGORIES]}
    (root / "annotations.json").write_text(json.dumps(data))
    return data


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def make_coco():
    """The dataset writer (tests import nothing from conftest under importlib mode)."""
    return _make_coco


@pytest.fixture
def write_json():
    return _write_json


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """A clean 6-image dataset (2 classes with ids 3 and 7) plus one image without objects."""
    _make_coco(tmp_path / "coco", n_images=6, empty_images=1)
    return tmp_path / "coco"


ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = ROOT / "configs" / "detection" / "faster_rcnn_r18_fpn_cpu.yaml"


def _tiny_overrides(run: Path, *extra: str) -> list[str]:
    """Overrides that make the CPU config train in seconds on 64-128 px images; data keys go in ``extra``."""
    return [
        f"output_dir={run}",
        "train.epochs=1",
        "train.batch_size=2",
        "train.max_steps_per_epoch=2",
        "train.warmup_epochs=0",
        "train.tensorboard=false",
        "train.amp=off",  # exact comparisons are fp32 (amp=auto is bf16 on CPUs with native bf16)
        "train.plots=false",
        "model.min_size=[64]",
        "model.max_size=96",
        "model.fpn_channels=32",
        "model.rpn_pre_nms_top_n_test=100",
        "model.rpn_post_nms_top_n_test=50",
        "model.rpn_post_nms_top_n_train=100",
        "model.box_batch_size_per_image=64",
        "data.val_fraction=0.3",
        "data.num_vis_images=0",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_det_argv():
    """``argv(root, run, *overrides)``: tools/train_det.py's arguments for the tiny CPU config on ``root``."""

    def argv(root: Path, run: Path, *overrides: str) -> list[str]:
        return [str(CPU_CONFIG), *_tiny_overrides(run, f"data.root={root}", *overrides)]

    return argv


@pytest.fixture(scope="session")
def tiny_det_config():
    """``make(run_dir, *overrides) -> DetectionConfig``: the CPU config shrunk to a seconds-long run."""
    from tasks.detection.config import DetectionConfig
    from tasks.engine.config import load_config

    def make(run: Path, *overrides: str) -> DetectionConfig:
        return load_config(CPU_CONFIG, _tiny_overrides(run, *overrides), DetectionConfig)

    return make


@pytest.fixture(scope="session")
def train_det_main():
    """``main(run_dir, *overrides) -> exit code`` of tools/train_det.py on the tiny CPU config."""
    module = importlib.import_module("tools.train_det")  # the repo root is on pytest's pythonpath

    def main(run: Path, *overrides: str) -> int:
        return module.main([str(CPU_CONFIG), *_tiny_overrides(run, *overrides)])

    return main
