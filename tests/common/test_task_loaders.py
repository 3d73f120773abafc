"""Every task's loader gives the same pixels for the same RGBA / EXIF-turned / 16-bit file.

Each file is written in the layout its task reads (class folders, a COCO JSON, image/mask pairs, support
and query folders) and read back through that task's own dataset, predict path or fixed-task mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.classification.data import ImageListDataset as ClassificationImages
from tasks.classification.data import Sample
from tasks.detection.data import CategoryMap, CocoDetection
from tasks.detection.data_check import check_coco
from tasks.detection.predict import predict_images
from tasks.fewshot.data import ImageListDataset as FewShotImages
from tasks.fewshot.fixed_task import load_fixed_task
from tasks.fewshot.transforms import build_transform
from tasks.segmentation.config import SegmentationConfig, SegmentationDataConfig
from tasks.segmentation.data import SegmentationDataset, discover_records, resolve_spec
from tasks.segmentation.image_io import SegmentationDataError
from tasks.segmentation.predict import read_input

HEIGHT, WIDTH = 24, 40  # as displayed; not square, so a missed EXIF turn changes the shape
CATEGORIES = [{"id": 1, "name": "thing"}]
FEWSHOT_SIZE = 32


def write_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[:, : WIDTH // 3, 3] = 0  # a transparent band: the colour stored under it must not show
    rgba[:, -WIDTH // 3 :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(path)
    colour, alpha = rgba[..., :3].astype(float), rgba[..., 3:].astype(float) / 255
    expected = np.round(colour * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return expected, expected


def write_exif_jpeg(path: Path) -> tuple[np.ndarray, np.ndarray]:
    stored = np.zeros((WIDTH, HEIGHT, 3), np.uint8)  # portrait as stored, landscape as displayed
    stored[: WIDTH // 2] = (200, 40, 40)
    stored[WIDTH // 2 :, : HEIGHT // 2] = (40, 40, 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    raw = np.asarray(Image.open(path).convert("RGB"))  # the decoded pixels, without the EXIF turn
    expected = np.ascontiguousarray(np.rot90(raw, -1))
    return expected, expected


def write_rgb16(path: Path) -> tuple[np.ndarray, np.ndarray]:
    values = np.random.default_rng(1).integers(0, 65536, (HEIGHT, WIDTH, 3)).astype(np.uint16)
    cv2.imwrite(str(path), values[..., ::-1])  # OpenCV writes BGR
    return np.round(values * 255.0 / 65535).astype(np.uint8), values


def write_gray16(path: Path) -> tuple[np.ndarray, np.ndarray]:
    values = np.random.default_rng(2).integers(0, 65536, (HEIGHT, WIDTH)).astype(np.uint16)
    Image.fromarray(values).save(path)
    values = np.repeat(values[..., None], 3, axis=-1)
    return np.round(values * 255.0 / 65535).astype(np.uint8), values


FILES = {
    "rgba.png": write_rgba,
    "exif.jpg": write_exif_jpeg,
    "rgb16.png": write_rgb16,
    "gray16.png": write_gray16,
}


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A (3, H, W) float tensor in [0, 1] back to (H, W, 3) uint8."""
    return (image * 255).round().byte().permute(1, 2, 0).numpy()


class RecordingDetector(torch.nn.Module):
    """Stands in for a trained detector: predict_images only needs outputs to hand back."""

    def forward(self, images):
        return [{"boxes": torch.zeros(0, 4)} for _ in images]


# ---------------------------------------------------------------------------------------------- loaders


def classification_item(path: Path) -> np.ndarray:
    image, _ = ClassificationImages([Sample(path, 0)], ["a"])[0]
    return np.asarray(image)


def coco_for(path: Path) -> dict:
    box = [4, 2, 12, 10]  # x, y, w, h on the displayed image
    return {
        "images": [{"id": 1, "file_name": path.name, "width": WIDTH, "height": HEIGHT}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 120, "iscrowd": 0}],
        "categories": CATEGORIES,
    }


def detection_item(path: Path) -> np.ndarray:
    data = coco_for(path)
    assert check_coco(data, path.parent) == []  # the displayed size matches the JSON's width/height
    image, target = CocoDetection(data, path.parent, CategoryMap(CATEGORIES))[0]
    assert image.shape == (3, HEIGHT, WIDTH) and target["boxes"].tolist() == [[4.0, 2.0, 16.0, 12.0]]
    return to_uint8(image)


def detection_predict(path: Path) -> np.ndarray:
    [(image, _)] = predict_images(RecordingDetector(), [path])
    return to_uint8(image)


def segmentation_item(path: Path) -> np.ndarray:
    root = path.parent
    (root / "images").mkdir()
    (root / "masks").mkdir()
    path.rename(root / "images" / path.name)
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(root / "masks" / f"{path.stem}.png")
    spec = resolve_spec(SegmentationDataConfig(root=str(root), value_map={0: 0, 255: 1}), 2)
    records = discover_records(root, spec, in_chans=3)  # checks the image's displayed size against the mask
    image, _ = SegmentationDataset(records, spec, in_chans=3, normalization="none").load(0)
    return image


def segmentation_predict(path: Path) -> np.ndarray:
    cfg = SegmentationConfig()
    cfg.model.in_chans, cfg.data.normalization = 3, "none"
    return read_input(path, cfg)


def fewshot_item(path: Path) -> torch.Tensor:
    return FewShotImages([path], [0], build_transform(FEWSHOT_SIZE, 3), 3)[0][0]


def fewshot_fixed_task(path: Path) -> torch.Tensor:
    root = path.parent
    for name in ("a", "b"):
        (root / "support" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (0, 0, 0)).save(root / "support" / name / "s.png")
    (root / "query").mkdir()
    path.rename(root / "query" / path.name)
    task = load_fixed_task(root / "support", root / "query")  # checks every header first
    # As runner.predict_fixed_task reads the queries.
    return FewShotImages(task.query_paths, [0], build_transform(FEWSHOT_SIZE, 3), 3)[0][0]


EIGHT_BIT_LOADERS = {
    "classification dataset": classification_item,
    "detection dataset": detection_item,
    "detection predict": detection_predict,
}
FULL_DEPTH_LOADERS = {"segmentation dataset": segmentation_item, "segmentation predict": segmentation_predict}
RESIZING_LOADERS = {"few-shot dataset": fewshot_item, "few-shot fixed task": fewshot_fixed_task}


@pytest.mark.parametrize("loader", list(EIGHT_BIT_LOADERS))
@pytest.mark.parametrize("file_name", list(FILES))
def test_8bit_loaders_read_the_shared_pixels(tmp_path, file_name, loader):
    expected, _ = FILES[file_name](tmp_path / file_name)
    assert np.array_equal(EIGHT_BIT_LOADERS[loader](tmp_path / file_name), expected)


@pytest.mark.parametrize("loader", list(FULL_DEPTH_LOADERS))
@pytest.mark.parametrize("file_name", list(FILES))
def test_segmentation_reads_the_same_pixels_at_full_depth(tmp_path, file_name, loader):
    expected, full_depth = FILES[file_name](tmp_path / file_name)
    image = FULL_DEPTH_LOADERS[loader](tmp_path / file_name)
    assert image.dtype == np.float32 and np.array_equal(image, full_depth.astype(np.float32))
    top = 65535.0 if full_depth.dtype == np.uint16 else 255.0
    assert np.array_equal(np.round(image * 255.0 / top).astype(np.uint8), expected)  # the 8-bit tasks' view


@pytest.mark.parametrize("loader", list(RESIZING_LOADERS))
@pytest.mark.parametrize("file_name", list(FILES))
def test_fewshot_reads_the_same_pixels_before_resizing(tmp_path, file_name, loader):
    expected, _ = FILES[file_name](tmp_path / file_name)
    transform = build_transform(FEWSHOT_SIZE, 3)
    assert torch.equal(RESIZING_LOADERS[loader](tmp_path / file_name), transform(expected))


def test_turned_photo_keeps_its_coco_box_on_the_object(tmp_path):
    # The annotator saw the photo upright (landscape) and drew the box around the red object there.
    view = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
    view[4:16, 2:14] = (220, 30, 30)
    stored = np.ascontiguousarray(np.rot90(view, 1))  # portrait: turned back counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    data = coco_for(tmp_path / "phone.jpg")
    data["annotations"][0]["bbox"] = [2, 4, 12, 12]
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    assert check_coco(data, tmp_path) == []
    image, target = CocoDetection(data, tmp_path, CategoryMap(CATEGORIES))[0]
    x0, y0, x1, y1 = (int(v) for v in target["boxes"][0])
    inside, outside = to_uint8(image)[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1], to_uint8(image)[y1 + 2 :]
    assert (inside[..., 0] > 180).all() and (inside[..., 1] < 70).all()
    assert (outside < 60).all()


def test_coco_sizes_of_the_stored_orientation_are_explained(tmp_path):
    stored = np.zeros((WIDTH, HEIGHT, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    data = coco_for(tmp_path / "phone.jpg")
    data["images"][0].update(width=HEIGHT, height=WIDTH)  # a tool that ignored the EXIF tag
    [problem] = check_coco(data, tmp_path)
    assert problem.kind == "size_mismatch"
    assert "EXIF orientation 6 turns its stored 24x40 pixels" in problem.message


def test_segmentation_mask_of_the_stored_orientation_is_explained(tmp_path):
    write_exif_jpeg(tmp_path / "phone.jpg")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "phone.jpg").rename(tmp_path / "images" / "phone.jpg")
    Image.fromarray(np.zeros((WIDTH, HEIGHT), np.uint8)).save(tmp_path / "masks" / "phone.png")  # unturned
    spec = resolve_spec(SegmentationDataConfig(root=str(tmp_path), value_map={0: 0, 255: 1}), 2)
    with pytest.raises(SegmentationDataError, match=r"24x40 \(HxW\) as displayed \(its EXIF orientation 6"):
        discover_records(tmp_path, spec, in_chans=3)
