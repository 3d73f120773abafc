"""The detection task's data: sets without objects, evaluation without the training images, junk files."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from tasks.common.images import list_images
from tasks.detection.data import split_image_ids
from tasks.detection.data_check import DatasetError
from tasks.detection.task import DetectionTask
from tasks.detection.voc import voc_to_coco
from tasks.engine.trainer import Trainer


def _rewrite(root, change) -> dict:
    """Apply ``change(data)`` to ``root/annotations.json`` and write it back."""
    data = json.loads((root / "annotations.json").read_text())
    change(data)
    (root / "annotations.json").write_text(json.dumps(data))
    return data


def _no_annotations(data):
    data["annotations"] = []


def _all_crowd(data):
    for ann in data["annotations"]:
        ann["iscrowd"] = 1


def _all_broken(data):
    for ann in data["annotations"]:
        ann["bbox"] = [1, 1, 0, 5]  # degenerate: dropped by check_policy=drop


@pytest.mark.parametrize(
    "change, extra, why",
    [
        (_no_annotations, [], "its 'annotations' list is empty"),
        (_all_crowd, [], "all 12 of its annotations are iscrowd=1"),
        (_all_broken, ["data.check_policy=drop"], "data.check_policy=drop dropped all 12 of its annotations"),
    ],
    ids=["empty", "all-crowd", "all-dropped"],
)
def test_training_set_without_objects_is_refused_before_training(
    coco_root, tmp_path, tiny_det_config, change, extra, why
):
    _rewrite(coco_root, change)
    run = tmp_path / "run"
    cfg = tiny_det_config(run, f"data.root={coco_root}", *extra)
    trainer = Trainer(cfg, DetectionTask(cfg))
    with pytest.raises(DatasetError) as err:
        trainer.fit()
    message = str(err.value)
    assert str(coco_root / "annotations.json") in message
    assert "no annotations: nothing to learn" in message and why in message
    assert "Expected at least one object" in message
    assert not run.exists()


def test_held_out_split_that_leaves_no_training_object_is_refused(tmp_path, make_coco, tiny_det_config):
    root = tmp_path / "coco"
    data = make_coco(root, n_images=1, empty_images=5)  # one annotated image (id 10), five negatives
    ids = [img["id"] for img in data["images"]]
    seed = next(s for s in range(100) if 10 in split_image_ids(ids, 0.3, s)[1])
    cfg = tiny_det_config(tmp_path / "run", f"data.root={root}", f"data.split_seed={seed}")
    with pytest.raises(DatasetError, match=r"training part of the held-out split of .*nothing to learn"):
        DetectionTask(cfg).build_datasets()


def test_validation_file_without_objects_warns_that_ap_is_minus_one(
    coco_root, tmp_path, tiny_det_config, caplog
):
    val = json.loads((coco_root / "annotations.json").read_text())
    val["annotations"] = []
    (tmp_path / "val.json").write_text(json.dumps(val))
    cfg = tiny_det_config(tmp_path / "run", f"data.root={coco_root}", f"data.val_ann={tmp_path / 'val.json'}")
    task = DetectionTask(cfg)
    with caplog.at_level(logging.WARNING, logger="tasks.detection"):
        _, val_set = task.build_datasets()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(tmp_path / "val.json") in warning and "no annotations" in warning
    assert "reported as -1" in warning
    metrics, _ = task.evaluator.evaluate([])  # what an epoch's evaluation gets, detections or not
    assert len(val_set) == 7 and set(metrics.values()) == {-1.0}


# ------------------------------------------------------------------------ evaluation without training data


def _corrupt(path):
    path.write_bytes(b"this is not a PNG file")


def _separate_val_file(root, tmp_path) -> tuple[list[str], set[int]]:
    """Validation = a file of its own with images 10 and 11; training keeps the others."""
    data = json.loads((root / "annotations.json").read_text())
    val_ids = {10, 11}
    for name, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        part = dict(data, images=[im for im in data["images"] if keep(im["id"])])
        part["annotations"] = [a for a in data["annotations"] if keep(a["image_id"])]
        (tmp_path / f"{name}.json").write_text(json.dumps(part))
    overrides = [
        f"data.train_ann={tmp_path / 'train.json'}",
        f"data.train_images={root / 'images'}",
        f"data.val_ann={tmp_path / 'val.json'}",
    ]
    return overrides, val_ids


def _held_out(root, tmp_path) -> tuple[list[str], set[int]]:
    data = json.loads((root / "annotations.json").read_text())
    _, val_ids = split_image_ids([img["id"] for img in data["images"]], 0.3, 0)
    return [f"data.root={root}"], set(val_ids)


@pytest.mark.parametrize("layout", [_separate_val_file, _held_out], ids=["val_ann", "held-out"])
def test_eval_dataset_ignores_a_corrupt_training_image(coco_root, tmp_path, tiny_det_config, layout):
    overrides, val_ids = layout(coco_root, tmp_path)
    data = json.loads((coco_root / "annotations.json").read_text())
    broken = next(img for img in data["images"] if img["id"] not in val_ids)
    _corrupt(coco_root / "images" / broken["file_name"])
    cfg = tiny_det_config(tmp_path / "run", *overrides)

    with pytest.raises(DatasetError, match=re.escape(broken["file_name"])):
        DetectionTask(cfg).build_datasets()
    task = DetectionTask(cfg)
    val_set = task.build_eval_dataset()
    assert sorted(img["id"] for img in val_set.images) == sorted(val_ids)
    assert val_set[0][0].shape[0] == 3 and task.evaluator is not None


def test_eval_dataset_uses_the_split_of_training(coco_root, tmp_path, tiny_det_config):
    """A broken image drops out of training under check_policy=drop; the split must not move with it."""
    _corrupt(coco_root / "images" / "img_0.png")
    cfg = tiny_det_config(tmp_path / "run", f"data.root={coco_root}", "data.check_policy=drop")
    _, trained_val = DetectionTask(cfg).build_datasets()
    eval_set = DetectionTask(cfg).build_eval_dataset()
    assert [img["id"] for img in eval_set.images] == [img["id"] for img in trained_val.images]


# ---------------------------------------------------------------------------------------------- junk files


def _add_junk(folder):
    """What a macOS archive brings along: AppleDouble forks (named like images), .DS_Store, __MACOSX/."""
    (folder / "._img_0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._img_1.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")


def test_prediction_folder_skips_junk(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("img_0.png", "img_1.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)
    _add_junk(folder)
    assert [p.name for p in list_images(folder)] == ["img_0.png", "img_1.jpg"]


def test_voc_conversion_skips_junk(tmp_path):
    xml = (
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>6</ymax></bndbox>"
        "</object></annotation>"
    )
    (tmp_path / "a.xml").write_text(xml)
    (tmp_path / "._a.xml").write_bytes(b"\x00\x05\x16\x07 not XML")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._a.xml").write_bytes(b"\x00\x05\x16\x07")
    data = voc_to_coco(tmp_path)
    assert [img["file_name"] for img in data["images"]] == ["a.jpg"]
    assert [c["name"] for c in data["categories"]] == ["cat"] and len(data["annotations"]) == 1
