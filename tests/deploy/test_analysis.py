"""tools/analyze.py: stage table vs FlopCounterMode on torchvision, the real LR schedule, sample grids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from tasks.classification import ClassificationModelConfig, build_classifier
from tasks.common.backbone import BackboneConfig
from tasks.deploy.analysis import browse_dataset, lr_schedule, stage_rows
from tasks.deploy.errors import DeployError
from tasks.engine.config import TrainConfig
from tasks.engine.loading import load_trained_model

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


def test_stage_rows_add_up_to_torchvision_totals():
    model = build_classifier(ClassificationModelConfig(backbone=BackboneConfig(arch="resnet18")), 10)
    rows = stage_rows(model, torch.zeros(1, 3, 64, 64))
    names = [r["name"] for r in rows]
    assert names == ["backbone.stem", *[f"backbone.layer{i}" for i in range(1, 5)], "head", "total"]
    anchor = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        anchor(torch.zeros(1, 3, 64, 64))
    total = rows[-1]
    assert total["gflops"] * 1e9 == counter.get_total_flops()
    assert total["params"] == sum(p.numel() for p in anchor.parameters())
    assert sum(r["params"] for r in rows[:-1]) == total["params"]
    assert sum(r["gflops"] for r in rows[:-1]) == pytest.approx(total["gflops"], rel=1e-9)
    # layer1 of ResNet-18 at 64 px: 4 convs of 64->64, 3x3, on 16x16 maps.
    assert rows[1]["gflops"] * 1e9 == 4 * 2 * 64 * 64 * 9 * 16 * 16


def test_lr_schedule_is_the_engine_schedule():
    cfg = TrainConfig(epochs=4, lr=0.1, scheduler="step", step_size=2, gamma=0.1, warmup_epochs=1)
    rates = lr_schedule(cfg, steps_per_epoch=5)
    assert len(rates) == 20
    assert rates[0] == pytest.approx(0.1 * cfg.warmup_lr_ratio)  # warmup starts at lr * warmup_lr_ratio
    assert rates[5] == pytest.approx(0.1) and rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.01)  # decay after step_size epochs
    cosine = lr_schedule(TrainConfig(epochs=2, lr=0.5, scheduler="cosine", min_lr=0.0), steps_per_epoch=50)
    assert (
        cosine[0] == pytest.approx(0.5) and cosine[50] == pytest.approx(0.25, rel=0.05) and cosine[-1] < 0.01
    )


def test_analyze_tool_writes_tables_and_pngs(cls_checkpoint, tmp_path, capsys):
    root = load_trained_model(cls_checkpoint).cfg.data.root
    config = tmp_path / "cls.yaml"
    config.write_text(
        "model:\n  backbone:\n    arch: resnet18\n    frozen_stages: 1\n"
        f"data:\n  root: {root}\n  image_size: 32\n"
        "train:\n  epochs: 3\n  batch_size: 4\n  warmup_epochs: 1\n"
    )
    out = tmp_path / "analysis"
    # This short file is a valid few-shot config too: the task is named, not guessed.
    assert _tool("analyze").main([str(config), "--out", str(out)]) == 2
    assert "fits ['classification', 'fewshot']; expected exactly one; pass --task" in capsys.readouterr().err
    args = [str(config), "--task", "classification", "--out", str(out), "--samples", "6"]
    assert _tool("analyze").main(args) == 0
    printed = capsys.readouterr().out
    assert "backbone.layer4" in printed and "GFLOPs" in printed
    assert "frozen_stages=1" in printed  # the freezing table of the configured backbone
    # 24 images, 2 per class held out (stratified 20%); the trainer drops the last partial batch.
    assert "12 updates, 4 per epoch (from 18 training samples)" in printed
    for name, min_width in (("lr_schedule.png", 300), ("samples.png", 200)):
        with Image.open(out / name) as image:
            assert image.width >= min_width
    assert "6 samples" in printed


def test_analyze_tool_reads_a_detector_checkpoint(det_checkpoint, tmp_path, capsys):
    args = [str(det_checkpoint), "--only", "stages", "lr", "--out", str(tmp_path)]
    assert _tool("analyze").main(args) == 0
    printed = capsys.readouterr().out
    assert f"{det_checkpoint}: detection" in printed and "input (1, 3, 64, 64)" in printed  # model.min_size
    rows = {line.split()[0] for line in printed.splitlines() if line.strip()}
    assert {"backbone.body.layer4", "backbone.fpn", "rpn", "roi_heads", "total"} <= rows
    assert "per epoch (from the task's batch sampler)" in printed  # aspect-ratio groups


def test_browser_draws_masks_boxes_and_episodes(seg_checkpoint, det_checkpoint, tmp_path):
    seg = load_trained_model(seg_checkpoint)
    assert browse_dataset(seg.task, str(tmp_path / "seg.png"), count=3) == 3
    det = load_trained_model(det_checkpoint)
    assert browse_dataset(det.task, str(tmp_path / "det.png"), count=2) == 2
    grid = np.asarray(Image.open(tmp_path / "det.png").convert("RGB")).astype(int)
    green = (grid[..., 1] > 150) & (grid[..., 0] < 100) & (grid[..., 2] < 100)
    assert green.sum() > 50  # ground-truth boxes are drawn in green

    from tasks.fewshot.config import FewShotConfig
    from tasks.fewshot.task import FewShotTask

    for c in range(6):  # 6 classes x 5 drawings: enough base classes for a 5-way episode
        (tmp_path / "fs" / f"class{c}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((20, 20), 40 * c, np.uint8)).save(
                tmp_path / "fs" / f"class{c}" / f"{i}.png"
            )
    cfg = FewShotConfig()
    cfg.data.root, cfg.data.split_fractions = str(tmp_path / "fs"), [1.0, 0.0, 0.0]
    cfg.data.n_way, cfg.data.k_shot, cfg.data.q_query = 5, 1, 2
    assert browse_dataset(FewShotTask(cfg), str(tmp_path / "episode.png")) == 5 * (1 + 2)


def test_browser_names_missing_data(cls_checkpoint, tmp_path):
    task = load_trained_model(cls_checkpoint, [f"data.root={tmp_path / 'nowhere'}"]).task
    with pytest.raises(DeployError, match="cannot read the train data"):
        browse_dataset(task, str(tmp_path / "x.png"))
