from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import torch
import torchvision

from tasks.classification.config import ClassificationConfig
from tasks.engine import load_checkpoint, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "classification"


def load_tool():
    spec = importlib.util.spec_from_file_location("train_cls", ROOT / "tools" / "train_cls.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


train_cls = load_tool()


def test_shipped_configs_load():
    cfgs = {p.stem: load_config(p, [], ClassificationConfig) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert {"resnet18_imagefolder", "resnet50_finetune", "resnet18_cifar"} <= set(cfgs)
    fine = cfgs["resnet50_finetune"]
    assert (
        fine.model.backbone.arch == "resnet50"
        and fine.model.backbone.frozen_stages == 3
        and fine.model.backbone.weights
    )
    cifar = cfgs["resnet18_cifar"]
    assert (
        cifar.model.backbone.stem_type == "small"
        and cifar.data.augment.policy == "cifar"
        and cifar.data.image_size == 32
    )
    assert cifar.train.optimizer == "sgd" and cifar.train.scheduler == "step"
    assert cfgs["resnet18_imagefolder"].train.seed == 0  # from configs/_base_/default_runtime.yaml


def test_train_eval_resume_cycle(image_folder, tmp_path, tiny, capsys):
    out = tmp_path / "run"
    config = str(CONFIGS / "resnet18_imagefolder.yaml")
    assert train_cls([config, *tiny(image_folder, out, "data.val_fraction=0.5")]) == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "predictions.csv",
        "per_class.csv",
        "confusion_matrix.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (out / name).is_file(), name
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"ants", "bees"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["best_metric"] == "top1"

    assert train_cls([config, *tiny(image_folder, out, "data.val_fraction=0.5"), "--eval-only"]) == 0
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["weights"].endswith("best.pt") and 0.0 <= evaluation["top1"] <= 1.0
    assert evaluation["top5"] == 1.0  # 2 classes

    assert (
        train_cls([config, *tiny(image_folder, out, "data.val_fraction=0.5", "train.epochs=2"), "--resume"])
        == 0
    )
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2

    capsys.readouterr()
    changed = tiny(image_folder, out, "data.val_fraction=0.5", "train.epochs=3", "model.dropout=0.5")
    assert train_cls([config, *changed, "--resume", "auto"]) == 2
    assert "refusing to resume" in capsys.readouterr().err


def test_bad_data_and_config_fail_before_training(image_folder, tmp_path, tiny, capsys):
    config = str(CONFIGS / "resnet18_imagefolder.yaml")
    (image_folder / "bees" / "bees_1.png").write_bytes(b"\x89PNG broken")
    assert train_cls([config, *tiny(image_folder, tmp_path / "r")]) == 2
    assert "bees_1.png" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()
    assert train_cls([config, *tiny(image_folder, tmp_path / "r", "data.skip_corrupt=true")]) == 0
    assert train_cls([config, *tiny(image_folder, tmp_path / "r", "train.batchsize=3")]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err


def test_cifar_config_with_mixup_and_cosine_head(tmp_path, make_folder, tiny):
    root = make_folder(tmp_path / "c", per_class=4, size=32, classes=("ants", "bees", "wasps"))
    extra = (
        "data.augment.mixup_alpha=0.2",
        "data.augment.cutmix_alpha=1.0",
        "model.head=cosine",
        "train.max_steps_per_epoch=1",
        "model.label_smoothing=0.1",
    )
    assert train_cls([str(CONFIGS / "resnet18_cifar.yaml"), *tiny(root, tmp_path / "run", *extra)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["last"]["train/loss"] > 0


def test_finetune_config_freezes_stages_loaded_from_a_weights_file(image_folder, tmp_path, tiny):
    weights = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    extra = (f"model.backbone.weights={weights}", "train.max_steps_per_epoch=2", "train.ema=false")
    assert (
        train_cls([str(CONFIGS / "resnet50_finetune.yaml"), *tiny(image_folder, tmp_path / "run", *extra)])
        == 0
    )
    start = torch.load(weights, weights_only=True)
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    for key in ("conv1.weight", "layer3.5.conv3.weight", "layer3.5.bn3.running_mean"):
        assert torch.equal(final[f"backbone.{key}"], start[key]), key  # frozen: weights and BN stats
    assert not torch.equal(final["backbone.layer4.2.conv3.weight"], start["layer4.2.conv3.weight"])
