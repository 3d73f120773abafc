"""Checkpoints carry their class list: --eval-only, --resume and --weights never permute labels silently."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from tasks.classification.config import ClassificationConfig
from tasks.classification.data import DataError
from tasks.classification.task import ClassificationTask
from tasks.engine import load_checkpoint
from tools import train_cls

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "classification" / "resnet18_imagefolder.yaml")
CLASSES = ["ants", "bees", "wasps"]
ROTATED = "data.classes=[bees,wasps,ants]"  # same set, no class keeps its position


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_folder, tiny):
    """A one-epoch run on root/{train,val}/{ants,bees,wasps} (explicit val: no split to reproduce)."""
    base = tmp_path_factory.mktemp("class_meta")
    data = base / "data"
    make_folder(data / "train", per_class=4, classes=CLASSES)
    make_folder(data / "val", per_class=2, classes=CLASSES, seed=1)
    run = base / "run"
    assert train_cls.main([CONFIG, *tiny(data, run)]) == 0
    return data, run


@pytest.fixture
def evaluate(tiny):
    """Run `--eval-only --weights last.pt` of a trained run on `data`, writing into `out`."""

    def run_eval(data: Path, run: Path, out: Path, *extra: str) -> int:
        weights = str(run / "checkpoints" / "last.pt")
        return train_cls.main([CONFIG, *tiny(data, out, *extra), "--eval-only", "--weights", weights])

    return run_eval


def predictions(run_dir: Path) -> dict[str, tuple[str, str]]:
    with (run_dir / "predictions.csv").open() as handle:
        return {row["path"]: (row["label"], row["prediction"]) for row in csv.DictReader(handle)}


def test_checkpoint_stores_the_class_names_in_label_order(trained):
    _, run = trained
    assert load_checkpoint(run / "checkpoints" / "last.pt")["task_meta"] == {"classes": CLASSES}


def test_eval_with_classes_listed_in_another_order_uses_the_checkpoint_order(trained, evaluate, tmp_path):
    data, run = trained
    assert evaluate(data, run, tmp_path / "sorted") == 0
    assert evaluate(data, run, tmp_path / "rotated", ROTATED) == 0
    reference, rotated = predictions(tmp_path / "sorted"), predictions(tmp_path / "rotated")
    # Read in data.classes' order, every prediction would name another class (no class keeps its place).
    assert rotated == reference and len(reference) == 6
    assert all(label == Path(path).parent.name for path, (label, _) in rotated.items())
    first, second = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("sorted", "rotated"))
    assert first["top1"] == second["top1"] and first["recall_macro"] == second["recall_macro"]


def test_eval_on_data_with_another_class_set_is_an_error(trained, evaluate, tmp_path, capsys):
    data, run = trained
    renamed = tmp_path / "renamed"
    shutil.copytree(data, renamed)
    for part in ("train", "val"):
        (renamed / part / "wasps").rename(renamed / part / "hornets")  # same count: the head still fits
    capsys.readouterr()
    assert evaluate(renamed, run, tmp_path / "eval") == 2
    err = capsys.readouterr().err
    assert "trained on the classes ['ants', 'bees', 'wasps']" in err
    assert "['ants', 'bees', 'hornets']" in err and "missing ['wasps']" in err
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_resume_keeps_the_checkpoint_label_order(trained, tiny, tmp_path):
    data, run = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    args = tiny(data, resumed, "train.epochs=2", ROTATED)
    assert train_cls.main([CONFIG, *args, "--resume"]) == 0
    last = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert last["step"] > load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert last["task_meta"] == {"classes": CLASSES}  # the head's rows still mean the same classes


def task_for(root: Path, **data) -> ClassificationTask:
    cfg = ClassificationConfig()
    cfg.data.root, cfg.data.image_size = str(root), 32
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return ClassificationTask(cfg)


def test_resume_labels_follow_the_checkpoint(tmp_path, make_folder):
    root = make_folder(tmp_path / "d", per_class=2, classes=CLASSES)
    task = task_for(root, val_fraction=0.0, classes=["wasps", "ants", "bees"])
    task.adopt_checkpoint_meta({"classes": CLASSES}, "ckpt.pt", "resume")
    train, _ = task.build_datasets()
    assert task.classes == CLASSES and task.checkpoint_meta() == {"classes": CLASSES}
    assert all(CLASSES[s.label] == s.path.parent.name for s in train.samples)


def test_explicit_classes_must_be_the_checkpoint_set(tmp_path, make_folder):
    root = make_folder(tmp_path / "d", per_class=2, classes=CLASSES)
    task = task_for(root, classes=["ants", "bees"])  # a subset of the checkpoint's classes
    with pytest.raises(DataError, match=r"data.classes gives \['ants', 'bees'\] \(missing \['wasps'\]"):
        task.adopt_checkpoint_meta({"classes": CLASSES}, "ckpt.pt", "eval")


def test_weights_only_log_class_differences_and_old_checkpoints_change_nothing(tmp_path, make_folder, caplog):
    root = make_folder(tmp_path / "d", per_class=2, classes=CLASSES)
    task = task_for(root)
    with caplog.at_level(logging.INFO, logger="tasks.classification"):
        task.adopt_checkpoint_meta({"classes": ["wasps", "bees", "ants"]}, "w.pt", "weights")
        task.adopt_checkpoint_meta({"classes": ["cats", "dogs"]}, "other.pt", "weights")
    assert task.classes == CLASSES
    assert "label order ['wasps', 'bees', 'ants']" in caplog.text
    assert "other.pt was trained on the classes ['cats', 'dogs']" in caplog.text
    task.adopt_checkpoint_meta({}, "old.pt", "eval")
    assert task.classes == CLASSES


def test_eval_only_opens_no_training_image(trained, evaluate, tmp_path):
    data, run = trained
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "train" / "ants" / "ants_0.png").write_bytes(b"\x89PNG broken")
    assert evaluate(broken, run, tmp_path / "eval") == 0
    assert evaluate(data, run, tmp_path / "reference") == 0
    scores = [json.loads((tmp_path / d / "eval.json").read_text())["top1"] for d in ("eval", "reference")]
    assert scores[0] == scores[1]
