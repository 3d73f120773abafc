"""Synthetic "shapes" data in each task's real on-disk format, for the demo and for smoke tests.

Images of coloured geometric shapes on noisy backgrounds:
- classification: ImageFolder ``train/<shape>/*.png`` and ``val/<shape>/*.png``;
- detection: ``images/*.png`` + COCO ``annotations.json`` (several shapes per image, non-contiguous
  category ids so the id mapping is exercised);
- segmentation: ``images/*.png`` + ``masks/*.png`` (0 = background, k = the k-th shape class);
- few-shot: ``<shape>/<shape>_<texture>_<colour>/*.png`` (group/class tree, many classes).

Everything is drawn from one seed, so the same call gives the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
TEXTURES = ("solid", "stripes", "checker", "dots")
# Non-contiguous, as in COCO itself: the detection task must map them to 1..K and back.
DETECTION_CATEGORY_IDS = {"circle": 3, "square": 7, "triangle": 11}


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "triangle":
        return [(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "cross":
        t = r / 3
        return [
            (cx - t, cy - r),
            (cx + t, cy - r),
            (cx + t, cy - t),
            (cx + r, cy - t),
            (cx + r, cy + t),
            (cx + t, cy + t),
            (cx + t, cy + r),
            (cx - t, cy + r),
            (cx - t, cy + t),
            (cx - r, cy + t),
            (cx - r, cy - t),
            (cx - t, cy - t),
        ]
    return None


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean mask of one shape centred at (cx, cy) with half-size r in a size x size image."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=255)
    return np.asarray(canvas) > 0


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(4, 7))
    if texture == "stripes":
        return ((xx + yy) // period) % 2 == 0
    if texture == "checker":
        return ((xx // period) + (yy // period)) % 2 == 0
    if texture == "dots":
        return ((xx % period) < period // 2) & ((yy % period) < period // 2)
    return np.ones((size, size), dtype=bool)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(60, 140, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(base + noise, 0, 255)


def _paint(image: np.ndarray, mask: np.ndarray, colour, texture_mask: np.ndarray, rng) -> None:
    jitter = rng.integers(-25, 26, size=3)
    colour = np.clip(np.array(colour) + jitter, 0, 255)
    dark = colour * 0.35
    image[mask & texture_mask] = colour
    image[mask & ~texture_mask] = dark


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(path)


def make_classification(root: Path, per_class: int, size: int, rng: np.random.Generator) -> Path:
    """ImageFolder train/val trees of single shapes (3 classes); val gets a quarter of ``per_class``."""
    classes = SHAPES[:3]
    for split, count in (("train", per_class), ("val", max(per_class // 4, 2))):
        for label in classes:
            for index in range(count):
                image = _background(size, rng)
                r = rng.uniform(0.2, 0.38) * size
                cx, cy = rng.uniform(r, size - r, size=2)
                colour = list(COLOURS.values())[int(rng.integers(len(COLOURS)))]
                _paint(image, shape_mask(label, size, cx, cy, r), colour, _texture("solid", size, rng), rng)
                _save(image, root / split / label / f"{label}_{index:04d}.png")
    return root


def _scene(size: int, classes, rng, max_objects: int, colour_by_class: bool = False):
    """An image with 1..max_objects non-overlapping shapes; returns image, label map and boxes."""
    image = _background(size, rng)
    labels = np.zeros((size, size), dtype=np.uint8)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(0.1, 0.22) * size
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            class_index = int(rng.integers(len(classes)))
            mask = shape_mask(classes[class_index], size, cx, cy, r)
            if not (labels[mask] > 0).any():
                break
        else:
            continue
        colour_index = class_index if colour_by_class else int(rng.integers(len(COLOURS)))
        _paint(image, mask, list(COLOURS.values())[colour_index], _texture("solid", size, rng), rng)
        labels[mask] = class_index + 1
        ys, xs = np.nonzero(mask)
        box = [
            float(xs.min()),
            float(ys.min()),
            float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1),
        ]
        objects.append((classes[class_index], box, int(mask.sum())))
    return image, labels, objects


def make_detection(root: Path, count: int, size: int, rng: np.random.Generator) -> Path:
    """``images/*.png`` and a COCO ``annotations.json`` with non-contiguous category ids."""
    classes = tuple(DETECTION_CATEGORY_IDS)
    images, annotations = [], []
    for index in range(count):
        image, _, objects = _scene(size, classes, rng, max_objects=3)
        name = f"shapes_{index:04d}.png"
        _save(image, root / "images" / name)
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        for label, box, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": DETECTION_CATEGORY_IDS[label],
                    "bbox": box,
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": cid, "name": name, "supercategory": "shape"} for name, cid in DETECTION_CATEGORY_IDS.items()
    ]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root


def make_segmentation(root: Path, count: int, size: int, rng: np.random.Generator) -> Path:
    """``images/*.png`` and ``masks/*.png`` with 0 = background and 1..3 = circle, square, triangle.

    Each class has its own colour family (red, green, blue, with jitter), so a short from-scratch demo run
    can separate the classes; the classification and detection sets keep colours random.
    """
    classes = SHAPES[:3]
    for index in range(count):
        image, labels, _ = _scene(size, classes, rng, max_objects=4, colour_by_class=True)
        _save(image, root / "images" / f"case{index:04d}.png")
        _save(labels, root / "masks" / f"case{index:04d}.png")
    return root


def make_fewshot(root: Path, per_class: int, size: int, rng: np.random.Generator) -> Path:
    """Group/class tree: one group per shape, one class per (texture, colour): 5 x 4 x 4 = 80 classes."""
    for shape in SHAPES:
        for texture in TEXTURES:
            for colour_name, colour in COLOURS.items():
                for index in range(per_class):
                    image = _background(size, rng)
                    r = rng.uniform(0.28, 0.42) * size
                    cx, cy = rng.uniform(r, size - r, size=2)
                    _paint(
                        image, shape_mask(shape, size, cx, cy, r), colour, _texture(texture, size, rng), rng
                    )
                    _save(image, root / shape / f"{shape}_{texture}_{colour_name}" / f"{index:03d}.png")
    return root


def make_all(root: str | Path, seed: int = 0, scale: float = 1.0) -> dict[str, Path]:
    """Write all four datasets under ``root`` and return their folders; ``scale`` shrinks the counts."""
    root = Path(root)
    rng = np.random.default_rng(seed)

    def n(count: int) -> int:
        return max(int(count * scale), 4)

    return {
        "classification": make_classification(root / "classification", n(150), 64, rng),
        "detection": make_detection(root / "detection", n(120), 96, rng),
        "segmentation": make_segmentation(root / "segmentation", n(160), 64, rng),
        "fewshot": make_fewshot(root / "fewshot", n(20), 32, rng),
    }
