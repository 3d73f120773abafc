"""COCO dataset, category mapping, image modes, augmentation, splits and aspect-ratio grouping."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from tasks.detection.data import CategoryMap, CocoDetection, split_image_ids, subset_coco
from tasks.detection.sampler import GroupedBatchSampler, aspect_ratio_groups
from tasks.detection.transforms import DetectionAugmentConfig, DetectionTransform


@pytest.fixture
def data(coco_root):
    return json.loads((coco_root / "annotations.json").read_text())


def test_category_map_non_contiguous_ids():
    cmap = CategoryMap([{"id": 7, "name": "bar"}, {"id": 3, "name": "square"}])
    assert cmap.num_classes == 3 and cmap.cat_ids == [3, 7] and cmap.names == ["square", "bar"]
    assert [cmap.to_label(c) for c in (3, 7)] == [1, 2]
    assert [cmap.to_cat_id(label) for label in (1, 2)] == [3, 7]
    with pytest.raises(ValueError, match="category id 5"):
        cmap.to_label(5)
    with pytest.raises(ValueError, match="0 is background"):
        cmap.to_cat_id(0)


def test_items_have_xyxy_boxes_contiguous_labels_and_skip_crowd(coco_root, data):
    crowd = dict(data["annotations"][0], id=999, iscrowd=1)
    data["annotations"].append(crowd)
    ds = CocoDetection(data, coco_root / "images", CategoryMap(data["categories"]))
    assert len(ds) == 7  # the image without objects is kept as a negative
    image, target = ds[0]
    assert (
        image.shape == (3, 96, 128) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    )
    anns = [a for a in data["annotations"] if a["image_id"] == target["image_id"] and not a.get("iscrowd")]
    expected = torch.tensor(
        [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ],
        dtype=torch.float32,
    )
    assert torch.equal(target["boxes"], expected)
    assert target["labels"].tolist() == [1, 2]  # ids 3 and 7
    _, empty = ds[6]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert (
        len(CocoDetection(data, coco_root / "images", CategoryMap(data["categories"]), keep_empty=False)) == 6
    )


def test_split_is_seeded_disjoint_and_complete():
    ids = list(range(100, 150))
    train, val = split_image_ids(ids, 0.2, seed=3)
    assert len(val) == 10 and sorted(train + val) == ids and not set(train) & set(val)
    assert split_image_ids(list(reversed(ids)), 0.2, seed=3) == (train, val)
    assert split_image_ids(ids, 0.2, seed=4) != (train, val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_image_ids(ids, 1.0, 0)
    with pytest.raises(ValueError, match="nothing would be left"):
        split_image_ids([1], 0.5, 0)


def test_subset_keeps_matching_annotations(data):
    sub = subset_coco(data, [10, 12])
    assert [i["id"] for i in sub["images"]] == [10, 12]
    assert {a["image_id"] for a in sub["annotations"]} == {10, 12} and sub["categories"] == data["categories"]


def test_horizontal_flip_moves_boxes():
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[5, 10, 25, 30]], np.float32)
    tf = DetectionTransform(DetectionAugmentConfig(hflip=1.0))
    _, new_boxes, labels = tf(image, boxes, np.array([2]))
    np.testing.assert_allclose(new_boxes, [[35, 10, 55, 30]], atol=1e-4)
    assert labels.tolist() == [2]


def test_zoom_removes_boxes_that_leave_the_image_with_their_labels():
    image = np.zeros((100, 100, 3), np.uint8)
    # One box in the corner (pushed out by a 2x zoom about the centre) and one in the middle (stays).
    boxes = np.array([[0, 0, 10, 10], [45, 45, 55, 55]], np.float32)
    tf = DetectionTransform(
        DetectionAugmentConfig(hflip=0.0, scale_jitter=0.8, scale_jitter_prob=1.0, min_visibility=0.3)
    )
    random.seed(0)
    removed = 0
    for _ in range(20):
        _, new_boxes, labels = tf(image, boxes, np.array([1, 2]))
        assert len(new_boxes) == len(labels)
        assert (new_boxes[:, 2] > new_boxes[:, 0]).all() and (new_boxes[:, 3] > new_boxes[:, 1]).all()
        assert (new_boxes >= 0).all() and (new_boxes <= 100).all()
        assert 2 in labels.tolist()  # the central box is never lost
        removed += 1 not in labels.tolist()
    assert 0 < removed < 20  # zooming in pushes the corner box out, zooming out keeps it


def test_augmentation_is_reproducible_from_python_seed():
    image = np.random.default_rng(0).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 30, 30]], np.float32)
    tf = DetectionTransform(
        DetectionAugmentConfig(hflip=0.5, scale_jitter=0.3, scale_jitter_prob=1.0, color_jitter=0.3)
    )
    random.seed(7)
    a = tf(image, boxes, np.array([1]))
    random.seed(7)
    b = tf(image, boxes, np.array([1]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_grouped_batches_are_homogeneous_and_cover_every_index():
    ratios = [1.5, 0.6] * 7 + [1.5]  # 8 landscape, 7 portrait
    groups = aspect_ratio_groups(ratios)
    assert groups[:2] == [1, 0]
    sampler = GroupedBatchSampler(groups, batch_size=3, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(15)) and len(batches) == len(sampler)
    pure = [b for b in batches if len({groups[i] for i in b}) == 1]
    assert len(pure) >= len(batches) - 1  # only the merged leftovers may mix orientations
    assert list(GroupedBatchSampler(groups, 3, seed=1)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_grouped_sampler_shards_across_ranks():
    groups = aspect_ratio_groups([1.5, 0.6, 1.2] * 5)
    shards = [list(GroupedBatchSampler(groups, 2, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert set(i for s in shards for b in s for i in b) == set(range(15))
    with pytest.raises(ValueError, match="rank"):
        GroupedBatchSampler(groups, 2, num_replicas=2, rank=2)
