from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from tasks.classification.config import ClassificationConfig
from tasks.classification.data import DataError, Sample, scan_image_folder, stratified_split
from tasks.classification.task import ClassificationTask
from tasks.classification.transforms import build_eval_transform


def task_for(root, **data):
    cfg = ClassificationConfig()
    cfg.data.root = str(root)
    cfg.data.image_size = 32
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return ClassificationTask(cfg)


def test_scan_image_folder_labels_in_sorted_class_order(image_folder, caplog):
    (image_folder / "ants" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="tasks.classification"):
        samples, classes = scan_image_folder(image_folder)
    assert "ignored 1 file(s)" in caplog.text and "notes.txt" in caplog.text
    assert classes == ["ants", "bees"]
    assert Counter(s.label for s in samples) == {0: 6, 1: 6}
    assert all(s.path.parent.name == classes[s.label] for s in samples)


def test_stratified_split_is_seeded_disjoint_and_balanced():
    samples = [Sample(f"a{i}", 0) for i in range(10)] + [Sample(f"b{i}", 1) for i in range(5)]
    train, val = stratified_split(samples, 0.2, seed=3)
    assert Counter(s.label for s in val) == {0: 2, 1: 1}
    assert set(train).isdisjoint(val) and len(train) + len(val) == 15
    assert stratified_split(samples, 0.2, seed=3) == (train, val)
    assert stratified_split(samples, 0.2, seed=4)[1] != val  # another seed, another split
    tiny = [Sample("x", 0), Sample("y", 0), Sample("z", 1), Sample("w", 1)]
    assert Counter(s.label for s in stratified_split(tiny, 0.1, 0)[1]) == {0: 1, 1: 1}  # >= 1 per class


def test_task_builds_split_datasets_with_train_and_val_transforms(image_folder):
    train, val = task_for(image_folder, val_fraction=0.5).build_datasets()
    assert len(train) == 6 and len(val) == 6
    image, label = train[0]
    assert image.shape == (3, 32, 32) and label in (0, 1)
    assert val[0][0].shape == (3, 32, 32)


def test_explicit_val_folder(tmp_path, make_folder):
    make_folder(tmp_path / "d" / "train", per_class=3)
    make_folder(tmp_path / "d" / "val", per_class=2, seed=1)
    train, val = task_for(tmp_path / "d").build_datasets()
    assert (len(train), len(val)) == (6, 4)


def test_empty_class_folder_is_an_error(image_folder):
    (image_folder / "wasps").mkdir()
    with pytest.raises(DataError, match=r"class folder .*wasps has no images"):
        task_for(image_folder).build_datasets()


def test_corrupt_image_fails_before_training_or_is_skipped(image_folder, caplog):
    bad = image_folder / "bees" / "bees_3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=r"bees_3.png.*data.skip_corrupt=true"):
        task_for(image_folder).build_datasets()
    with caplog.at_level(logging.WARNING, logger="tasks.classification"):
        train, val = task_for(image_folder, skip_corrupt=True).build_datasets()
    assert len(train) + len(val) == 11
    assert "skipped 1 corrupt image" in caplog.text and "bees_3.png" in caplog.text


def write_csv(path, rows):
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return path


def test_csv_lists(image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))
    rows = [(f.relative_to(image_folder), f.parent.name) for f in files]
    train_csv = write_csv(tmp_path / "train.csv", rows[:4] + rows[6:10])
    val_csv = write_csv(tmp_path / "val.csv", rows[4:6] + rows[10:])
    task = task_for(image_folder, format="csv", train_csv=str(train_csv), val_csv=str(val_csv))
    train, val = task.build_datasets()
    assert task.classes == ["ants", "bees"] and (len(train), len(val)) == (8, 4)
    assert [s.label for s in val.samples] == [0, 0, 1, 1]


def test_csv_missing_file_names_the_row(image_folder, tmp_path):
    csv_file = write_csv(tmp_path / "train.csv", [("ants/ants_0.png", "ants"), ("ants/nope.png", "ants")])
    with pytest.raises(DataError, match=r"train.csv:3: image file not found: .*nope.png"):
        task_for(image_folder, format="csv", train_csv=str(csv_file)).build_datasets()


def test_csv_unknown_label_is_an_error(image_folder, tmp_path):
    train_csv = write_csv(tmp_path / "train.csv", [("ants/ants_0.png", "ants"), ("bees/bees_0.png", "bees")])
    val_csv = write_csv(tmp_path / "val.csv", [("ants/ants_1.png", "wasps")])
    with pytest.raises(
        DataError, match=r"val.csv:2: label 'wasps' is not in the class list \['ants', 'bees'\]"
    ):
        task_for(image_folder, format="csv", train_csv=str(train_csv), val_csv=str(val_csv)).build_datasets()


def test_csv_header_and_missing_root_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,cls\nx.png,a\n")
    with pytest.raises(DataError, match=r"needs one of the columns \['path'"):
        task_for(tmp_path, format="csv", train_csv=str(bad)).build_datasets()
    with pytest.raises(DataError, match="image folder not found"):
        task_for(tmp_path / "nowhere").build_datasets()


def test_one_class_folder_points_at_the_layout(tmp_path, make_folder):
    top = tmp_path / "unzipped"
    make_folder(top / "hymenoptera" / "train", per_class=2)  # the usual unzip layout, root one level up
    make_folder(top / "hymenoptera" / "val", per_class=2)
    with pytest.raises(
        DataError,
        match=r"found 1 class folder 'hymenoptera' under .*unzipped: .*one level too high\? .*"
        r"data.root=.*hymenoptera$",
    ):
        task_for(top).build_datasets()
    train, val = task_for(top / "hymenoptera").build_datasets()
    assert train.classes == ["ants", "bees"] and (len(train), len(val)) == (4, 4)


def test_csv_with_a_single_label_is_an_error(image_folder, tmp_path):
    train_csv = write_csv(tmp_path / "train.csv", [("ants/ants_0.png", "ants"), ("ants/ants_1.png", "ants")])
    with pytest.raises(DataError, match=r"train.csv: every row has the label 'ants'.*at least 2 classes"):
        task_for(image_folder, format="csv", train_csv=str(train_csv)).build_datasets()


def add_macos_junk(root):
    """What a macOS archive leaves: AppleDouble `._*.png` files (not images) in and beside the classes."""
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
    for name in ("ants", "bees"):
        (root / "__MACOSX" / name).mkdir(parents=True)
        (root / "__MACOSX" / name / f"._{name}_0.png").write_bytes(apple_double)
        (root / name / f"._{name}_1.png").write_bytes(apple_double)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "bees" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")


@pytest.mark.parametrize("skip_corrupt", [False, True])
def test_macos_junk_is_never_a_class_nor_an_image(image_folder, skip_corrupt, caplog):
    add_macos_junk(image_folder)
    with caplog.at_level(logging.WARNING, logger="tasks.classification"):
        train, val = task_for(image_folder, skip_corrupt=skip_corrupt, val_fraction=0.5).build_datasets()
    assert train.classes == ["ants", "bees"]
    assert (len(train), len(val)) == (6, 6)
    assert all(not s.path.name.startswith("._") for s in train.samples + val.samples)
    assert caplog.text == ""  # no corrupt image skipped, no "ignored file" warning for Thumbs.db


def test_class_left_empty_by_skipped_corrupt_images_is_an_error(tmp_path, make_folder):
    root = make_folder(tmp_path / "d", per_class=3, classes=("ants", "bees", "wasps"))
    for image in (root / "wasps").iterdir():
        image.write_bytes(b"\x89PNG broken")
    with pytest.raises(
        DataError, match=r"class\(es\) \['wasps'\] have no images in the training set after skipping corrupt"
    ):
        task_for(root, skip_corrupt=True).build_datasets()


def test_csv_with_a_utf8_byte_order_mark(image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))
    rows = "".join(f"{f.relative_to(image_folder)},{f.parent.name}\n" for f in files)
    excel_csv = tmp_path / "excel.csv"
    excel_csv.write_text("path,label\n" + rows, encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    assert excel_csv.read_bytes().startswith(b"\xef\xbb\xbf")
    task = task_for(image_folder, format="csv", train_csv=str(excel_csv), val_fraction=0.0)
    train, _ = task.build_datasets()
    assert task.classes == ["ants", "bees"] and len(train) == 12


def test_eval_dataset_decodes_no_training_image(image_folder, monkeypatch):
    _, clean_val = task_for(image_folder, val_fraction=0.5).build_datasets()
    train_paths = {s.path for s in task_for(image_folder, val_fraction=0.5).build_datasets()[0].samples}
    corrupt = sorted(train_paths)[0]
    corrupt.write_bytes(b"\x89PNG broken")

    import tasks.classification.data as datasets

    opened = []

    def recording_check(path, decode=False):
        opened.append(path)
        return check_image(path, decode=decode)

    check_image = datasets.check_image
    monkeypatch.setattr(datasets, "check_image", recording_check)
    val = task_for(image_folder, val_fraction=0.5).build_eval_dataset()
    assert [s.path for s in val.samples] == [s.path for s in clean_val.samples]  # the same seeded split
    assert opened and not set(opened) & train_paths
    with pytest.raises(DataError, match=f"{corrupt.name}.*the training set"):
        task_for(image_folder, val_fraction=0.5).build_datasets()


@pytest.mark.parametrize("auto_augment", ["trivial", "rand"])
def test_auto_augment_adds_torchvision_policy_after_crop_and_flip(auto_augment):
    import numpy as np
    from PIL import Image
    from torchvision.transforms import v2

    from tasks.classification.config import ClassificationDataConfig
    from tasks.classification.transforms import ClassificationAugmentConfig, build_train_transform

    cfg = ClassificationDataConfig(
        image_size=32, augment=ClassificationAugmentConfig(auto_augment=auto_augment)
    )
    transform = build_train_transform(cfg)
    kinds = [type(t) for t in transform.transforms]
    expected = v2.TrivialAugmentWide if auto_augment == "trivial" else v2.RandAugment
    assert kinds.index(expected) == kinds.index(v2.RandomHorizontalFlip) + 2  # after the colour jitter
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    assert transform(image).shape == (3, 32, 32)


def test_eval_crop_size_sets_the_evaluation_and_export_size_only(image_folder):
    task = task_for(image_folder, eval_crop_size=40, val_fraction=0.5)
    train_set, val_set = task.build_datasets()
    assert train_set[0][0].shape[-2:] == (32, 32)  # training crops stay at data.image_size
    assert val_set[0][0].shape[-2:] == (40, 40)
    assert task.input_size() == (40, 40)
    image = Image.open(val_set.samples[0].path).convert("RGB")
    reference = v2.Compose(
        [
            v2.Resize(46, antialias=True),  # 40 / 0.875, the usual crop ratio
            v2.CenterCrop(40),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(task.cfg.data.mean, task.cfg.data.std),
        ]
    )
    assert torch.equal(build_eval_transform(task.cfg.data)(image), reference(image))
