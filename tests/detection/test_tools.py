"""End to end: train_det / predict_det / check_dataset on tiny synthetic data, and the task's evaluation."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from tasks.detection.task import DetectionTask

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


@pytest.fixture
def tiny(tiny_det_argv):
    """The tiny run of conftest, drawing two validation images whatever their scores."""
    return lambda root, run, *extra: tiny_det_argv(
        root, run, "data.num_vis_images=2", "data.vis_score_thresh=0.0", *extra
    )


@pytest.fixture
def mixed_root(coco_root):
    """The synthetic set with a grayscale, an RGBA image and one image without boxes (negatives kept)."""
    images = coco_root / "images"
    Image.open(images / "img_1.png").convert("L").save(images / "img_1.png")
    Image.open(images / "img_2.png").convert("RGBA").save(images / "img_2.png")
    return coco_root


@pytest.mark.slow
def test_train_eval_resume_predict(mixed_root, tmp_path, tiny, capsys):
    run = tmp_path / "run"
    train_det = tool("train_det")
    assert train_det.main(tiny(mixed_root, run)) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if any(k.endswith("AP50") for k in r)]
    assert evaluated, records
    last = evaluated[-1]
    ap_key = next(k for k in last if k.endswith("/AP") or k == "AP")
    loss_keys = [k for k in last if "loss" in k and k.startswith("val")]
    assert 0.0 <= last[ap_key] <= 1.0 and loss_keys  # validation loss logged next to the COCO metrics
    assert all(math.isfinite(last[k]) for k in loss_keys)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_metric"] == "AP"
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert len(list((run / "vis").glob("*.png"))) == 2
    assert "square" in (run / "val_per_class_ap.txt").read_text()

    # Detections are in the COCO results format with the dataset's own ids (3 and 7, not labels 1 and 2).
    gt = json.loads((mixed_root / "annotations.json").read_text())
    detections = json.loads((run / "val_detections.json").read_text())
    assert detections, "box_score_thresh=0.05 should leave some detections even untrained"
    assert {d["category_id"] for d in detections} <= {3, 7}
    assert {d["image_id"] for d in detections} <= {img["id"] for img in gt["images"]}
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 for d in detections)

    assert (
        train_det.main([*tiny(mixed_root, run), "--eval-only", "--weights", str(run / "checkpoints/best.pt")])
        == 0
    )
    assert "AP" in json.loads((run / "eval.json").read_text())
    assert train_det.main([*tiny(mixed_root, run, "train.epochs=2"), "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 2

    predict = tool("predict_det")
    out = tmp_path / "pred"
    args = [
        str(run / "checkpoints/last.pt"),
        str(mixed_root / "images"),
        "--out",
        str(out),
        "--score-thresh",
        "0",
    ]
    assert predict.main([*args, "--gt", str(mixed_root / "annotations.json"), "--max-drawn", "3"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} <= {img["id"] for img in gt["images"]}
    assert len(list((out / "drawn").glob("*.png"))) == 3
    assert '"AP50"' in capsys.readouterr().out  # scored against --gt
    assert predict.main([*args]) == 0  # no ground truth: ids 1..N listed in images.json
    listed = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in listed] == list(range(1, 8)) and listed[0]["file_name"] == "img_0.png"
    assert predict.main([args[0], str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_data_fails_before_training(coco_root, tmp_path, tiny, capsys):
    (coco_root / "images" / "img_3.png").unlink()
    run = tmp_path / "run"
    assert tool("train_det").main(tiny(coco_root, run)) == 2
    assert "img_3.png" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


def test_malformed_json_fails_clearly(coco_root, tmp_path, tiny, capsys):
    (coco_root / "annotations.json").write_text('{"images": [')
    assert tool("train_det").main(tiny(coco_root, tmp_path / "run")) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_drop_policy_trains_on_the_rest(coco_root, tmp_path, tiny_det_config):
    data = json.loads((coco_root / "annotations.json").read_text())
    data["annotations"][0]["bbox"] = [float("nan"), 1, 2, 3]
    data["annotations"][1]["category_id"] = 99
    (coco_root / "annotations.json").write_text(json.dumps(data))
    cfg = tiny_det_config(tmp_path / "run", f"data.root={coco_root}", "data.check_policy=drop")
    train_set, val_set = DetectionTask(cfg).build_datasets()
    n_boxes = sum(len(train_set[i][1]["boxes"]) for i in range(len(train_set)))
    n_boxes += sum(len(val_set[i][1]["boxes"]) for i in range(len(val_set)))
    assert n_boxes == len(data["annotations"]) - 2


def test_evaluate_keeps_batchnorm_statistics_and_rng(coco_root, tmp_path, tiny_det_config):
    cfg = tiny_det_config(tmp_path / "run", f"data.root={coco_root}")
    task = DetectionTask(cfg)
    model = task.build_model()
    _, val_set = task.build_datasets()
    # Batches are made first: creating a DataLoader iterator draws from the RNG by itself.
    loader = list(DataLoader(val_set, batch_size=2, collate_fn=task.collate_fn))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    model.eval()
    rng = torch.get_rng_state()
    metrics = task.evaluate(model, loader, torch.device("cpu"), tmp_path / "run", epoch=1)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns, strict=True))
    assert torch.equal(rng, torch.get_rng_state()) and not model.training
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "loss", "loss_classifier"} <= set(metrics)
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0


def test_check_dataset_tool(coco_root, tmp_path, capsys):
    check = tool("check_dataset")
    ann, images = str(coco_root / "annotations.json"), str(coco_root / "images")
    assert check.main([ann, images]) == 0
    assert "problems: none" in capsys.readouterr().out
    data = json.loads((coco_root / "annotations.json").read_text())
    data["annotations"][0]["bbox"] = [0, 0, 0, 5]
    data["annotations"][1]["bbox"] = [-30, 0, 40, 5]
    (coco_root / "annotations.json").write_text(json.dumps(data))
    assert check.main([ann, images]) == 1
    out = capsys.readouterr().out
    assert "degenerate_bbox=1" in out and "outside_image=1" in out and "annotation id 100" in out
    clean = tmp_path / "clean.json"
    assert check.main([ann, images, "--policy", "clip", "--write-clean", str(clean)]) == 0
    fixed = json.loads(clean.read_text())["annotations"]
    assert len(fixed) == len(data["annotations"]) - 1 and fixed[0]["bbox"] == [0.0, 0.0, 10.0, 5.0]
    (coco_root / "annotations.json").write_text("not json")
    assert check.main([ann, images]) == 2


@pytest.mark.slow
def test_torchrun_two_processes(coco_root, tmp_path, tiny):
    """train_det under torchrun (gloo on CPU): grouped batches split over 2 ranks, rank 0 writes and
    evaluates, every rank gets the metrics (the run would hang or fail otherwise)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(ROOT / "tools" / "train_det.py"), *tiny(coco_root, run, "train.batch_size=1")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_completed"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in records if r["kind"] == "epoch"]
    assert len(epoch) == 1  # one writer, one epoch row
    assert 0.0 <= next(v for k, v in epoch[0].items() if k.endswith("AP50")) <= 1.0
