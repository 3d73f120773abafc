"""Tiny synthetic COCO datasets made on the fly (no real data needed)."""

from __future__ import annotations

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
