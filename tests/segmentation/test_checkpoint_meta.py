"""Checkpoints record their classes and mask values; evaluation and resume adopt them or refuse others."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.engine.checkpoint import load_checkpoint
from tasks.engine.trainer import Trainer
from tasks.segmentation.image_io import SegmentationDataError
from tasks.segmentation.task import SegmentationTask

META = {"class_names": ["background", "disc", "square"], "value_map": [[0, 0], [1, 1], [2, 2]]}
MULTICLASS = [
    "model.backbone.in_chans=1",
    "data.normalization=minmax",
    "data.val_fraction=0.34",
    "eval.tile_size=[]",
    "train.epochs=1",
]


def _copy(src: Path, dst: Path, labels: dict[str, int], swap: bool) -> Path:
    """``src`` with the manifest's labels replaced; ``swap`` exchanges mask values 1 and 2 to match."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "dataset.json").read_text())
    (dst / "dataset.json").write_text(json.dumps({**manifest, "labels": labels}))
    if swap:
        for path in (dst / "masks").glob("*.png"):
            mask = np.array(Image.open(path))
            Image.fromarray(np.choose(mask, [0, 2, 1]).astype(np.uint8)).save(path)
    return dst


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_multiclass_dataset, tiny_seg_config) -> dict:
    """A 2-step run on the 3-class manifest set, and copies of the set with its classes reordered/renamed."""
    base = tmp_path_factory.mktemp("seg_meta")
    root = make_multiclass_dataset(base / "data")
    cfg = tiny_seg_config("unet_r34_multiclass.yaml", base / "run", f"data.root={root}", *MULTICLASS)
    Trainer(cfg, SegmentationTask(cfg)).fit()
    return {
        "base": base,
        "root": root,
        "checkpoint": base / "run" / "checkpoints" / "last.pt",
        # The same images and classes; the manifest lists square before disc and the masks say so.
        "reordered": _copy(root, base / "reordered", {"background": 0, "square": 1, "disc": 2}, swap=True),
        "renamed": _copy(root, base / "renamed", {"background": 0, "disc": 1, "box": 2}, swap=False),
    }


def _task(tiny_seg_config, root: Path, run: Path, *extra: str) -> SegmentationTask:
    cfg = tiny_seg_config("unet_r34_multiclass.yaml", run, f"data.root={root}", *MULTICLASS, *extra)
    return SegmentationTask(cfg)


def _evaluate(trained: dict, tiny_seg_config, root: Path, name: str) -> dict:
    task = _task(tiny_seg_config, root, trained["base"] / name)
    return Trainer(task.cfg, task, weights=str(trained["checkpoint"])).evaluate()


@pytest.mark.slow
def test_checkpoint_records_class_names_and_mask_values(trained):
    assert load_checkpoint(trained["checkpoint"])["task_meta"] == META


@pytest.mark.slow
def test_eval_on_reordered_classes_adopts_the_checkpoint_order(trained, tiny_seg_config, caplog):
    original = _evaluate(trained, tiny_seg_config, trained["root"], "eval_original")
    # Different per-class scores, so that swapping the two classes would show in the comparison.
    assert original["dice/disc"] != original["dice/square"] or original["iou/disc"] != original["iou/square"]
    with caplog.at_level(logging.INFO, logger="tasks.segmentation"):
        copy = _evaluate(trained, tiny_seg_config, trained["reordered"], "eval_reordered")
    assert copy.keys() == original.keys()
    for key, value in original.items():
        assert copy[key] == pytest.approx(value, nan_ok=True), key
    assert "using the checkpoint's order ['background', 'disc', 'square']" in caplog.text


@pytest.mark.slow
def test_eval_on_renamed_classes_is_refused(trained, tiny_seg_config):
    with pytest.raises(SegmentationDataError) as err:
        _evaluate(trained, tiny_seg_config, trained["renamed"], "eval_renamed")
    message = str(err.value)
    assert "['background', 'disc', 'box']" in message and "['background', 'disc', 'square']" in message
    assert str(trained["renamed"] / "dataset.json") in message and str(trained["checkpoint"]) in message
    assert "--weights" in message


@pytest.mark.slow
def test_weights_from_other_classes_only_log(trained, tiny_seg_config, caplog):
    task = _task(tiny_seg_config, trained["renamed"], trained["base"] / "finetune")
    with caplog.at_level(logging.WARNING, logger="tasks.segmentation"):
        Trainer(task.cfg, task, weights=str(trained["checkpoint"]))
    assert (
        "['background', 'disc', 'square']" in caplog.text and "['background', 'disc', 'box']" in caplog.text
    )
    assert task.dataset_spec().class_names == ["background", "disc", "box"]


# ------------------------------------------------------------------------ the hook alone (no training run)


def test_reordered_classes_for_resume_compose_the_value_map(multiclass_dataset, tmp_path, tiny_seg_config):
    root = _copy(multiclass_dataset, tmp_path / "reordered", {"background": 0, "square": 1, "disc": 2}, True)
    task = _task(tiny_seg_config, root, tmp_path / "run")
    task.adopt_checkpoint_meta(META, "ckpt.pt", "resume")
    spec = task.dataset_spec()
    assert spec.class_names == META["class_names"] and spec.lookup() == {0: 0, 1: 2, 2: 1}
    train, _ = task.build_datasets()
    # img0's square pixels are 1 in the copy's masks: they load as class 2 (square) of the checkpoint.
    original = np.array(Image.open(multiclass_dataset / "masks" / f"{train.records[0].stem}.png"))
    assert np.array_equal(train.load(0)[1], original)
    assert task.checkpoint_meta() == {**META, "value_map": [[0, 0], [1, 2], [2, 1]]}


@pytest.mark.parametrize("purpose", ["resume", "eval"])
def test_renamed_classes_fail_when_the_meta_is_adopted(
    multiclass_dataset, tmp_path, tiny_seg_config, purpose
):
    root = _copy(multiclass_dataset, tmp_path / "renamed", {"background": 0, "disc": 1, "box": 2}, False)
    hint = "resume on the data it was trained on" if purpose == "resume" else "evaluate it on data with"
    with pytest.raises(SegmentationDataError, match=hint):
        _task(tiny_seg_config, root, tmp_path / "run").adopt_checkpoint_meta(META, "ckpt.pt", purpose)


def test_unnamed_classes_take_the_checkpoint_names(binary_dataset, tmp_path, tiny_seg_config):
    cfg = tiny_seg_config(
        "unet_r34_membrane.yaml",
        tmp_path / "run",
        f"data.root={binary_dataset}",
        "data.images_dir=images",
        "data.masks_dir=masks",
        "data.class_names=[]",
    )
    task = SegmentationTask(cfg)
    task.adopt_checkpoint_meta(
        {"class_names": ["membrane", "cell"], "value_map": [[0, 0], [255, 1]]}, "c", "eval"
    )
    assert task.dataset_spec().class_names == ["membrane", "cell"]
    assert task.dataset_spec().lookup() == {0: 0, 255: 1}  # the data's own value map


def test_checkpoints_without_meta_change_nothing(multiclass_dataset, tmp_path, tiny_seg_config):
    task = _task(tiny_seg_config, multiclass_dataset, tmp_path / "run")
    task.adopt_checkpoint_meta({}, "old.pt", "eval")
    assert task.dataset_spec().class_names == META["class_names"]
    assert len(task.build_eval_dataset()) == 2  # one held-out patient with two images
