"""Checkpoints record their classes; evaluation and resume adopt them or refuse data with other classes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tasks.detection.data import CategoryMap
from tasks.detection.data_check import DatasetError
from tasks.detection.task import DetectionTask
from tasks.engine.checkpoint import load_checkpoint
from tasks.engine.trainer import Trainer
from tasks.shapes import make_detection

CLASSES = {"category_ids": [3, 7, 11], "class_names": ["circle", "square", "triangle"]}  # tasks.shapes
RENUMBERED = {3: 11, 7: 3, 11: 7}  # the same classes under other ids: sorted ids put them in another order


def _copy_annotations(src: Path, dst: Path, ids: dict[int, int], names: dict[str, str] | None = None) -> Path:
    """``src`` with category ids replaced by ``ids`` (in annotations too), names by ``names``, reversed."""
    data = json.loads(src.read_text())
    names = names or {}
    data["categories"] = [
        {**c, "id": ids[c["id"]], "name": names.get(c["name"], c["name"])}
        for c in reversed(data["categories"])
    ]
    for ann in data["annotations"]:
        ann["category_id"] = ids[ann["category_id"]]
    dst.write_text(json.dumps(data))
    return dst


def _data_keys(root: Path, ann: Path) -> list[str]:
    return [f"data.train_ann={ann}", f"data.train_images={root / 'images'}"]


EVAL_KEYS = ("model.box_score_thresh=0.0", "model.box_detections_per_img=20")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    """The shapes set (3 classes with ids 3, 7, 11) and copies of its annotations with other classes."""
    base = tmp_path_factory.mktemp("det_meta")
    root = make_detection(base / "data", 12, 96, np.random.default_rng(0))
    identity = {c: c for c in RENUMBERED}
    return {
        "base": base,
        "root": root,
        "renumbered": _copy_annotations(root / "annotations.json", base / "renumbered.json", RENUMBERED),
        "renamed": _copy_annotations(
            root / "annotations.json", base / "renamed.json", identity, {"circle": "disc"}
        ),
    }


@pytest.fixture(scope="module")
def trained(shapes, tiny_det_config) -> dict:
    """``shapes`` plus the checkpoints of a 2-step run on it."""
    cfg = tiny_det_config(shapes["base"] / "run", f"data.root={shapes['root']}")
    Trainer(cfg, DetectionTask(cfg)).fit()
    return {**shapes, "checkpoint": shapes["base"] / "run" / "checkpoints" / "best.pt"}


def _evaluate(trained: dict, tiny_det_config, name: str, ann: Path) -> tuple[dict, list[tuple]]:
    """Metrics and detections (image, class name, box, score) of the checkpoint on ``ann``."""
    run = trained["base"] / name
    cfg = tiny_det_config(run, *_data_keys(trained["root"], ann), *EVAL_KEYS)
    metrics = Trainer(cfg, DetectionTask(cfg), weights=str(trained["checkpoint"])).evaluate()
    name_of = {c["id"]: c["name"] for c in json.loads(ann.read_text())["categories"]}
    detections = json.loads((run / "val_detections.json").read_text())
    named = sorted((d["image_id"], name_of[d["category_id"]], d["bbox"], d["score"]) for d in detections)
    return metrics, named


@pytest.mark.slow
def test_checkpoint_records_the_classes_in_label_order(trained):
    assert load_checkpoint(trained["checkpoint"])["task_meta"] == CLASSES


@pytest.mark.slow
def test_eval_on_renumbered_classes_adopts_the_checkpoint_order(trained, tiny_det_config, caplog):
    copy = json.loads(trained["renumbered"].read_text())["categories"]
    assert CategoryMap(copy).names != CLASSES["class_names"]  # ascending ids alone would permute labels
    metrics, detections = _evaluate(
        trained, tiny_det_config, "eval_original", trained["root"] / "annotations.json"
    )
    assert len({name for _, name, _, _ in detections}) >= 2  # several classes, so a permutation would show
    with caplog.at_level(logging.INFO, logger="tasks.detection"):
        metrics_copy, detections_copy = _evaluate(
            trained, tiny_det_config, "eval_copy", trained["renumbered"]
        )
    assert detections_copy == detections
    assert metrics_copy == pytest.approx(metrics)
    assert "using the checkpoint's label order ['circle' (id 11), 'square' (id 3), 'triangle' (id 7)]" in (
        caplog.text
    )


@pytest.mark.slow
def test_eval_on_renamed_classes_is_refused(trained, tiny_det_config):
    with pytest.raises(DatasetError) as err:
        _evaluate(trained, tiny_det_config, "eval_renamed", trained["renamed"])
    message = str(err.value)
    assert str(trained["renamed"]) in message and str(trained["checkpoint"]) in message
    assert "['disc' (id 3), 'square' (id 7), 'triangle' (id 11)]" in message  # the data's classes
    assert "['circle' (id 3), 'square' (id 7), 'triangle' (id 11)]" in message  # the checkpoint's
    assert "--weights" in message


@pytest.mark.slow
def test_weights_from_other_classes_only_log(trained, tiny_det_config, caplog):
    cfg = tiny_det_config(trained["base"] / "finetune", *_data_keys(trained["root"], trained["renamed"]))
    task = DetectionTask(cfg)
    with caplog.at_level(logging.WARNING, logger="tasks.detection"):
        Trainer(cfg, task, weights=str(trained["checkpoint"]))
    assert "'circle' (id 3)" in caplog.text and "'disc' (id 3)" in caplog.text
    assert task.categories().names == ["disc", "square", "triangle"]  # the data's own order


@pytest.mark.slow
def test_resume_on_renumbered_classes_continues_in_the_checkpoint_order(trained, tiny_det_config):
    run = trained["base"] / "resumed"
    keys = _data_keys(trained["root"], trained["renumbered"])
    cfg = tiny_det_config(run, *keys, "train.epochs=2")
    task = DetectionTask(cfg)
    summary = Trainer(cfg, task, resume=str(trained["base"] / "run" / "checkpoints" / "last.pt")).fit()
    assert summary["epochs_completed"] == 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["task_meta"] == {
        "category_ids": [11, 3, 7],
        "class_names": CLASSES["class_names"],
    }


@pytest.mark.parametrize("purpose", ["resume", "eval"])
def test_renamed_classes_fail_when_the_meta_is_adopted(shapes, tiny_det_config, purpose):
    cfg = tiny_det_config(shapes["base"] / "unused", *_data_keys(shapes["root"], shapes["renamed"]))
    hint = "resume on the data it was trained on" if purpose == "resume" else "evaluate it on data with"
    with pytest.raises(DatasetError, match=hint):
        DetectionTask(cfg).adopt_checkpoint_meta(CLASSES, "ckpt.pt", purpose)


def test_checkpoints_without_meta_change_nothing(shapes, tiny_det_config):
    cfg = tiny_det_config(shapes["base"] / "unused", *_data_keys(shapes["root"], shapes["renumbered"]))
    task = DetectionTask(cfg)
    task.adopt_checkpoint_meta({}, "old.pt", "eval")
    assert task.categories().cat_ids == [3, 7, 11]  # ascending ids, as before checkpoints had meta
    assert task.checkpoint_meta() == {
        "category_ids": [3, 7, 11],
        "class_names": ["square", "triangle", "circle"],
    }


def test_renumbered_classes_are_put_in_the_checkpoint_order_for_resume(shapes, tiny_det_config, caplog):
    cfg = tiny_det_config(shapes["base"] / "unused", *_data_keys(shapes["root"], shapes["renumbered"]))
    task = DetectionTask(cfg)
    with caplog.at_level(logging.INFO, logger="tasks.detection"):
        task.adopt_checkpoint_meta(CLASSES, "ckpt.pt", "resume")
    train_set, _ = task.build_datasets()
    assert task.categories().names == CLASSES["class_names"] and task.categories().cat_ids == [11, 3, 7]
    assert "using the checkpoint's label order" in caplog.text
    # Each box keeps its class: a circle (id 11 in the copy) is label 1 as in the checkpoint.
    copy = json.loads(shapes["renumbered"].read_text())
    by_image = {img["id"]: [] for img in copy["images"]}
    for ann in copy["annotations"]:
        by_image[ann["image_id"]].append(ann["category_id"])
    for index, info in enumerate(train_set.images):
        _, labels = train_set.raw_target(index)
        assert sorted(labels.tolist()) == sorted({11: 1, 3: 2, 7: 3}[c] for c in by_image[info["id"]])
