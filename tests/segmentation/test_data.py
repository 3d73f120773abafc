"""Data: pairing by stem, formats and bit depths, value maps, manifest, NIfTI slicing, splits, transforms."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.segmentation.config import SegmentationDataConfig
from tasks.segmentation.data import (
    SegmentationDataset,
    discover_records,
    map_mask,
    pad_collate,
    resolve_spec,
    split_by_case,
)
from tasks.segmentation.image_io import read_image_and_max
from tasks.segmentation.manifest import DatasetSpec, load_manifest, write_manifest
from tasks.segmentation.transforms import (
    IGNORE_INDEX,
    SegmentationAugmentConfig,
    build_train_transform,
    normalize,
)


def read_image(path, in_chans):
    return read_image_and_max(path, in_chans)[0]


def _spec(**kw):
    return DatasetSpec(class_names=["bg", "fg"], value_map={0: 0, 255: 1}, **kw)


def test_pairs_by_stem_across_formats(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem, ext in [("a", ".png"), ("b", ".jpg"), ("c", ".tif"), ("d", ".bmp")]:
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{stem}{ext}"
        )
        mask = np.zeros((20, 24), np.uint8)
        mask[5:10, 5:10] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}_mask.png")
    records = discover_records(tmp_path, _spec(mask_suffix="_mask"), in_chans=3)
    assert [r.stem for r in records] == ["a", "b", "c", "d"]
    ds = SegmentationDataset(records, _spec(mask_suffix="_mask"), 3, "imagenet")
    sample = ds[2]
    assert sample["image"].shape == (3, 20, 24) and sample["mask"].dtype == torch.long
    assert set(sample["mask"].unique().tolist()) == {0, 1} and int(sample["mask"].sum()) == 25


def test_16bit_image_is_read_with_full_range(tmp_path):
    values = np.array([[0, 1000], [30000, 65535]], np.uint16)
    path = tmp_path / "img16.png"
    Image.fromarray(values).save(path)
    image = read_image(path, in_chans=1)
    assert image.dtype == np.float32 and np.array_equal(image[..., 0], values.astype(np.float32))
    # 16-bit and 8-bit versions of the same picture normalise to the same values
    eight = (values / 257).round().astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "img8.png")
    a = normalize(read_image(path, 1), "imagenet", 65535.0)
    b = normalize(read_image(tmp_path / "img8.png", 1), "imagenet", 255.0)
    np.testing.assert_allclose(a, b, atol=0.02)
    tif = tmp_path / "img16.tif"
    Image.fromarray(values).save(tif)
    assert np.array_equal(read_image(tif, 1)[..., 0], values)


def test_16bit_rgb_keeps_16_bits(tmp_path):
    # Pillow would silently reduce a 16-bit RGB PNG to 8 bits; the reader must not.
    import cv2

    values = np.random.default_rng(0).integers(0, 65535, (5, 6, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), values[..., ::-1])  # OpenCV writes BGR
    image, max_value = read_image_and_max(tmp_path / "rgb16.png", 3)
    assert max_value == 65535.0 and np.array_equal(image, values.astype(np.float32))


def test_grayscale_feeds_three_channels_and_opaque_rgba_drops_alpha(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(
        read_image(tmp_path / "g.png", 3), np.repeat(gray[..., None], 3, -1).astype(np.float32)
    )
    rgba = np.dstack([np.full((3, 4, 3), 7, np.uint8), np.full((3, 4), 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", 3).shape == (3, 4, 3)


def test_normalization_modes():
    image = np.array([[[0.0], [10.0]], [[20.0], [30.0]]], np.float32)
    z = normalize(image, "zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    mm = normalize(image, "minmax")
    assert mm.min() == 0.0 and mm.max() == 1.0
    ct = normalize(
        np.array([[[-1000.0], [40.0]], [[240.0], [3000.0]]], np.float32), "ct_window", ct_window=(40, 400)
    )
    np.testing.assert_allclose(ct[..., 0], [[0.0, 0.5], [1.0, 1.0]])
    with pytest.raises(ValueError, match="normalization"):
        normalize(image, "percentile")


def test_value_map_and_manifest_round_trip(tmp_path, multiclass_dataset):
    spec = load_manifest(multiclass_dataset / "dataset.json")
    assert spec.class_names == ["background", "disc", "square"] and spec.spacing == [0.5, 0.5]
    write_manifest(spec, tmp_path / "again.json")
    assert load_manifest(tmp_path / "again.json") == spec
    raw = np.array([[0, 255], [255, 0]])
    assert np.array_equal(map_mask(raw, {0: 0, 255: 1}, "m.png"), [[0, 1], [1, 0]])


def test_manifest_errors_name_file_and_key(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"bg": 0, "fg": 2}}))
    with pytest.raises(ValueError, match=r"dataset.json: label indices must be 0..1"):
        load_manifest(path)
    path.write_text(json.dumps({"labels": {"bg": 0}, "lables": {}}))
    with pytest.raises(ValueError, match="unknown keys \\['lables'\\]"):
        load_manifest(path)
    path.write_text(json.dumps({"labels": {"bg": 0, "fg": 1}, "value_map": {"255": 3}}))
    with pytest.raises(ValueError, match="value_map"):
        load_manifest(path)


def test_case_grouped_split_is_seeded_and_disjoint(multiclass_dataset):
    cfg = SegmentationDataConfig(root=str(multiclass_dataset), manifest="dataset.json")
    spec = resolve_spec(cfg, 3)
    records = discover_records(multiclass_dataset, spec, in_chans=1)
    train, val = split_by_case(records, 0.34, seed=3)
    assert sorted(train + val) == list(range(6))
    train_cases = {records[i].case_id for i in train}
    val_cases = {records[i].case_id for i in val}
    assert not train_cases & val_cases and len(val_cases) == 1 and len(val) == 2  # both slices of a patient
    assert split_by_case(records, 0.34, seed=3) == (train, val)
    held_out = {
        frozenset(records[i].case_id for i in split_by_case(records, 0.34, seed)[1]) for seed in range(8)
    }
    assert len(held_out) > 1  # the seed does pick the cases


def test_case_pattern_groups_by_regex(binary_dataset):
    cfg = SegmentationDataConfig(root=str(binary_dataset), value_map={0: 0, 255: 1})
    records = discover_records(binary_dataset, resolve_spec(cfg, 2), 1, case_pattern=r"^(img)\d")
    assert {r.case_id for r in records} == {"img"}


def test_nifti_volumes_are_sliced_with_spacing(nifti_dataset):
    cfg = SegmentationDataConfig(root=str(nifti_dataset), manifest="dataset.json")
    spec = resolve_spec(cfg, 2)
    records = discover_records(nifti_dataset, spec, in_chans=1)
    assert len(records) == 12 and {r.slice_index for r in records} == {0, 1, 2, 3}
    ds = SegmentationDataset(records, spec, 1, "ct_window", ct_window=(40, 400))
    sample = ds[1]
    assert sample["image"].shape == (1, 32, 32) and 0.0 <= float(sample["image"].min())
    assert ds.spacing(1) == pytest.approx((0.8, 0.8)) and ds.volume_spacing(1) == pytest.approx(
        (0.8, 0.8, 2.5)
    )
    assert int(ds[0]["mask"].sum()) == 0 and int(sample["mask"].sum()) > 0  # slice 0 is the empty one


def test_joint_augmentation_keeps_image_and_mask_aligned():
    image = np.zeros((40, 50, 1), np.float32)
    mask = np.zeros((40, 50), np.uint8)
    image[5:15, 10:30] = 1.0
    mask[5:15, 10:30] = 1
    aug = SegmentationAugmentConfig(
        crop_size=[64, 64],
        hflip=1.0,
        vflip=1.0,
        rotate90=1.0,
        rotate_p=1.0,
        rotate_limit=20,
        elastic_p=0.0,
        brightness_contrast_p=0.0,
    )
    out = build_train_transform(aug)(image=image, mask=mask)
    assert out["image"].shape[:2] == (64, 64) and out["mask"].shape == (64, 64)
    inside = out["mask"] == 1
    assert inside.sum() > 100 and out["image"][..., 0][inside].mean() > 0.9
    assert (out["mask"] == IGNORE_INDEX).any()  # padding is marked ignore, never background


def test_pad_collate_pads_masks_with_ignore():
    a = {"image": torch.ones(1, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.long), "index": 0}
    b = {"image": torch.ones(1, 5, 3), "mask": torch.ones(5, 3, dtype=torch.long), "index": 1}
    batch = pad_collate([a, b])
    assert batch["image"].shape == (2, 1, 5, 6) and batch["size"].tolist() == [[4, 6], [5, 3]]
    assert batch["mask"][0, 4, 0] == IGNORE_INDEX and batch["mask"][1, 0, 5] == IGNORE_INDEX
