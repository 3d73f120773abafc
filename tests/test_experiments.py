"""experiments/: the held-out protocols split cleanly and score with the reference formulas."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _script(name: str) -> dict:
    return runpy.run_path(str(EXPERIMENTS / name))  # a folder of scripts, not a package


def test_hymenoptera_protocol_holds_out_a_stratified_part_and_drops_what_imagefolder_skips(tmp_path):
    root = tmp_path / "data"
    for name, count in (("ants", 10), ("bees", 5)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(root / name / f"{i}.jpg")
    Image.new("RGB", (8, 8)).save(root / "ants" / "imageNotFound.gif")
    _script("hymenoptera_protocol.py")["main"](["make", "--root", str(root), "--out", str(tmp_path / "p")])
    for name, count in (("ants", 10), ("bees", 5)):
        train = {p.name for p in (tmp_path / "p" / "train" / name).iterdir()}
        test = {p.name for p in (tmp_path / "p" / "test" / name).iterdir()}
        assert not train & test and train | test == {f"{i}.jpg" for i in range(count)}
        # 40% of the files listed (the .gif counts in ants' 11 before it is dropped from its part)
        assert len(test) in ({3, 4} if name == "ants" else {2})


def test_wilson_interval_matches_the_textbook_value():
    low, high = _script("hymenoptera_protocol.py")["wilson_interval"](8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)  # Wilson (1927) for 8 of 10


def _coco(tmp_path: Path) -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in range(1, 11)]
    boxes = [{"id": i, "image_id": i, "category_id": 1, "bbox": [8, 8, 20, 20], "area": 400, "iscrowd": 0}
             for i in range(1, 11)]  # fmt: skip
    return {"images": images, "annotations": boxes, "categories": [{"id": 1, "name": "raccoon"}]}


def test_raccoon_protocol_splits_images_and_their_boxes_apart(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    coco = _coco(tmp_path)
    (root / "annotations.json").write_text(json.dumps(coco))
    for img in coco["images"]:
        Image.new("RGB", (64, 64)).save(root / "images" / img["file_name"])
    _script("raccoon_protocol.py")["main"](["make", "--root", str(root), "--out", str(tmp_path / "p")])
    train, test = (json.loads((tmp_path / "p" / f"{part}.json").read_text()) for part in ("train", "test"))
    train_ids, test_ids = {i["id"] for i in train["images"]}, {i["id"] for i in test["images"]}
    assert not train_ids & test_ids and len(test_ids) == 3 and len(train_ids) == 7
    assert {a["image_id"] for a in test["annotations"]} == test_ids
    assert sorted(p.name for p in (tmp_path / "p" / "test_images").iterdir()) == sorted(
        f"{i}.jpg" for i in test_ids
    )


def test_raccoon_bootstrap_resamples_whole_images(tmp_path):
    script = _script("raccoon_protocol.py")
    gt = _coco(tmp_path)
    # Half the images found exactly, half missed: AP of a resample is the found share's precision curve.
    results = [{"image_id": i, "category_id": 1, "bbox": [8, 8, 20, 20], "score": 0.9} for i in range(1, 6)]
    same_gt, same_results = script["resample"](gt, results, list(range(1, 11)))
    assert len(same_gt["images"]) == 10 and len(same_results) == 5
    twice_gt, twice_results = script["resample"](gt, results, [1, 1, 6])
    assert [a["image_id"] for a in twice_gt["annotations"]] == [1, 2, 3]
    assert [r["image_id"] for r in twice_results] == [1, 2]
    intervals = script["bootstrap"](gt, results, 20)
    low, high = intervals["AP50"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0 and not np.isnan(low)


def test_learning_curves_read_evaluated_epochs_against_cpu_minutes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"kind": "step", "step": 1, "loss": 1.0},
        {"kind": "epoch", "epoch": 1, "cpu_time_s": 30.0, "train/loss": 0.9},  # not evaluated
        {"kind": "epoch", "epoch": 2, "cpu_time_s": 60.0, "val/top1": 0.5},
        {"kind": "epoch", "epoch": 3, "cpu_time_s": 120.0, "val/top1": 0.75},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    script = _script("plot_learning_curves.py")
    assert script["epoch_curve"](run, "top1") == ([1.0, 2.0], [0.5, 0.75])
    with pytest.raises(SystemExit, match="val/dice"):
        script["epoch_curve"](run, "dice")
