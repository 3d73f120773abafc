"""Class-folder scanning, image decoding (mixed sizes and modes), rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.fewshot.data import (
    FewShotDataError,
    ImageListDataset,
    RotatedClasses,
    check_image_headers,
    dataset_from_index,
    load_all,
    rotated_index,
    scan_class_folders,
)
from tasks.fewshot.transforms import FewShotAugmentConfig, build_transform


def test_nested_tree_classes_groups_and_ids(nested_tree):
    index = scan_class_folders(nested_tree)
    assert index.class_names == tuple(f"g{g}/c{c}" for g in range(2) for c in range(4))
    assert index.groups == ("g0",) * 4 + ("g1",) * 4
    assert index.num_images == 48
    samples = index.samples()
    assert samples[index.sample_id(5, 3)] == (nested_tree / "g1/c1/3.png", 5)
    sub = index.subset(["g1/c2", "g0/c1"])
    assert sub.class_names == ("g0/c1", "g1/c2") and sub.groups == ("g0", "g1")


def test_flat_tree_has_empty_groups(tmp_path, make_tree):
    index = scan_class_folders(make_tree(tmp_path / "flat", groups=0, classes=3, images=2))
    assert index.class_names == ("c0", "c1", "c2") and set(index.groups) == {""}


def test_mixed_depths_and_images_beside_folders_are_errors(nested_tree):
    (nested_tree / "lone").mkdir()
    Image.new("L", (32, 32)).save(nested_tree / "lone" / "x.png")  # class at depth 1 beside depth-2 classes
    with pytest.raises(FewShotDataError, match="different depths"):
        scan_class_folders(nested_tree)
    Image.new("L", (32, 32)).save(nested_tree / "g0" / "stray.png")
    with pytest.raises(FewShotDataError, match=r"g0 holds both images \(stray.png"):
        scan_class_folders(nested_tree)


def test_empty_class_folder_is_named(nested_tree):
    (nested_tree / "g1" / "c9").mkdir()
    with pytest.raises(FewShotDataError, match="g1/c9 has no images"):
        scan_class_folders(nested_tree)


def test_mixed_sizes_and_8bit_modes_give_identical_layout(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    base = Image.fromarray(gray)
    files = {
        "l.png": base,
        "rgb.png": base.convert("RGB"),
        "p.png": base.convert("P"),
        "one.png": base.convert("1").resize((70, 33)),
        "rgba.png": base.convert("RGBA").resize((64, 64)),
        "small.jpg": base.resize((9, 13)),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    paths = [tmp_path / n for n in files]
    check_image_headers(paths)  # mixed sizes and 8-bit modes are accepted
    for channels in (1, 3):
        images = load_all(ImageListDataset(paths, [0] * len(paths), build_transform(32, channels), channels))
        assert images.shape == (len(paths), channels, 32, 32) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
    # Same pixels in L, RGB and (gray-palette) P mode decode to the same tensor.
    gray_images = load_all(ImageListDataset(paths[:3], [0] * 3, build_transform(32, 1), 1))
    torch.testing.assert_close(gray_images[0], gray_images[1], atol=1 / 255, rtol=0)
    torch.testing.assert_close(gray_images[0], gray_images[2], atol=1 / 255, rtol=0)


def test_16bit_is_read_and_corrupt_file_is_named(tmp_path):
    # 16-bit images follow the shared policy (value * 255 / 65535) instead of being refused.
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    check_image_headers([tmp_path / "deep.png"])
    image = ImageListDataset([tmp_path / "deep.png"], [0], build_transform(8, 1), 1)[0][0]
    assert torch.allclose(image, torch.full((1, 8, 8), round(40000 / 257) / 255 * 2 - 1))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(FewShotDataError, match="cannot read image .*broken.png"):
        check_image_headers([tmp_path / "broken.png"])


def test_augmentation_jitters_base_images_and_is_off_by_default(nested_tree):
    index = scan_class_folders(nested_tree)
    plain = load_all(dataset_from_index(index, build_transform(32, 1), 1))
    assert torch.equal(
        plain, load_all(dataset_from_index(index, build_transform(32, 1, FewShotAugmentConfig()), 1))
    )
    jitter = FewShotAugmentConfig(rotate=10, translate=0.1, scale=0.1, hflip=0.5)
    torch.manual_seed(0)
    augmented = load_all(dataset_from_index(index, build_transform(32, 1, jitter), 1, cache=True))
    assert augmented.shape == plain.shape and not torch.allclose(augmented, plain, atol=0.05)


def test_affine_jitter_fills_the_uncovered_edge_with_the_given_grey_level():
    # A blank white page shifted and rotated: with fill 255 nothing dark appears; with the default
    # black fill the uncovered edge is drawn as dark pixels, a stroke that is not in the drawing.
    white = np.full((28, 28, 1), 255, dtype=np.uint8)
    torch.manual_seed(0)
    views = {}
    for fill in (0, 255):
        jitter = FewShotAugmentConfig(rotate=10, translate=0.2, scale=0.1, fill=fill)
        transform = build_transform(28, 1, jitter)
        views[fill] = torch.stack([transform(white) for _ in range(8)])
    black_fill, white_fill = views[0], views[255]
    assert (black_fill < 0).any()
    assert torch.equal(white_fill, torch.ones_like(white_fill))


def test_cache_returns_the_same_tensors(nested_tree):
    index = scan_class_folders(nested_tree)
    plain = load_all(dataset_from_index(index, build_transform(32, 1), 1))
    cached_set = dataset_from_index(index, build_transform(32, 1), 1, cache=True)
    first, second = load_all(cached_set), load_all(cached_set)
    assert len(cached_set.cache) == index.num_images
    assert torch.equal(plain, first) and torch.equal(first, second)


def test_rotated_classes_and_their_episode_index(nested_tree):
    index = scan_class_folders(nested_tree)
    dataset = dataset_from_index(index, build_transform(32, 1), 1)
    rotated = RotatedClasses(dataset, (0, 90, 180, 270))
    assert len(rotated) == 4 * len(dataset)
    image, label = rotated[4 * 7 + 1]  # sample 7 (class 1), rotated by 90 degrees
    assert label == 1 * 4 + 1
    assert torch.equal(image, torch.rot90(dataset[7][0], 1, dims=(-2, -1)))
    virtual, positions = rotated_index(index, 4)
    assert virtual.num_classes == 4 * index.num_classes
    for class_idx in (0, 6, 31):  # every virtual sample maps to a dataset item of that virtual class
        for image_idx in (0, 5):
            assert rotated[positions[virtual.sample_id(class_idx, image_idx)]][1] == class_idx
    with pytest.raises(FewShotDataError, match="multiples of 90"):
        RotatedClasses(dataset, (0, 45))


APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def test_macos_junk_is_never_a_class_nor_an_image(nested_tree):
    clean = scan_class_folders(nested_tree)
    (nested_tree / "__MACOSX" / "g0" / "c0").mkdir(parents=True)
    (nested_tree / "__MACOSX" / "g0" / "c0" / "._0.png").write_bytes(APPLE_DOUBLE)
    (nested_tree / "g0" / "c1" / "._0.png").write_bytes(APPLE_DOUBLE)
    (nested_tree / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (nested_tree / "g1" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")  # beside class folders
    assert scan_class_folders(nested_tree) == clean


def test_fixed_task_ignores_macos_junk(tmp_path, make_tree):
    from tasks.fewshot.fixed_task import load_fixed_task

    support = make_tree(tmp_path / "support", groups=0, classes=2, images=2)
    query = tmp_path / "query"
    query.mkdir()
    Image.new("L", (32, 32)).save(query / "q0.png")
    for folder in (support, query):
        (folder / "__MACOSX").mkdir()
        (folder / "__MACOSX" / "._q0.png").write_bytes(APPLE_DOUBLE)
        (folder / "._q0.png").write_bytes(APPLE_DOUBLE)
    task = load_fixed_task(support, query)
    assert task.class_names == ("c0", "c1") and len(task.support_paths) == 4
    assert task.query_paths == (query / "q0.png",) and task.query_labels is None  # flat, unlabelled query
