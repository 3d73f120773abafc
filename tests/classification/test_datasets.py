from __future__ import annotations

import logging
from collections import Counter

import pytest

from tasks.classification.config import ClsConfig
from tasks.classification.datasets import DataError, Sample, scan_image_folder, stratified_split
from tasks.classification.task import ClassificationTask


def task_for(root, **data):
    cfg = ClsConfig()
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
    train, val = task_for(image_folder, val_ratio=0.5).build_datasets()
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
