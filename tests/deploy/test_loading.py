"""The one loader behind every tool: older checkpoints, the EMA rule, no backbone weights read.

Older checkpoints name no task and have no task_meta; before the backbone section their model keys were
flat (model.arch, model.frozen_stages, detection's model.norm: auto, ...), classification split with
data.val_ratio and kept its augmentation keys flat under data. They are written here as that code wrote them.
"""

from __future__ import annotations

import importlib
import json

import torch

from tasks.classification import ClassificationConfig, build_classifier
from tasks.detection.config import DetectionConfig
from tasks.detection.model import build_detector
from tasks.engine.config import config_from_dict, config_to_dict
from tasks.engine.loading import load_trained_model
from tasks.fewshot.config import FewShotConfig
from tasks.fewshot.task import FewShotTask
from tasks.segmentation.config import SegmentationConfig
from tasks.segmentation.predict import predict_folder
from tasks.segmentation.task import SegmentationTask


def _tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


def _flat_model_section(model: dict, backbone_keys: dict) -> dict:
    """A model section in the layout before `model.backbone`: the backbone keys at its top level."""
    section = {key: value for key, value in model.items() if key != "backbone"}
    return {**backbone_keys, **section}


def _old_classification_checkpoint(path, data_root: str) -> torch.nn.Module:
    cfg = ClassificationConfig()
    cfg.model.backbone.arch = "resnet18"
    cfg.data.root, cfg.data.image_size = data_root, 32
    torch.manual_seed(0)
    model = build_classifier(cfg.model, 3, load_weights=False).eval()
    config = config_to_dict(cfg)
    old_backbone = {
        "arch": "resnet18",
        "weights": "",
        "stem_type": "default",
        "frozen_stages": -1,
        "norm_eval": False,
        "drop_path_rate": 0.0,
    }
    config["model"] = _flat_model_section(config["model"], old_backbone)
    config["data"]["val_ratio"] = config["data"].pop("val_fraction")
    augment = config["data"].pop("augment")  # flat keys and a policy string
    del augment["auto_augment"]  # came later, always inside data.augment
    config["data"].update(augment, augment="cifar", min_scale=0.5)
    del config["data"]["policy"]
    torch.save({"model": model.state_dict(), "config": config, "epoch": 3, "ema": None}, path)
    return model


def test_an_old_classification_checkpoint_loads_and_exports(cls_checkpoint, tmp_path):
    data_root = load_trained_model(cls_checkpoint).cfg.data.root
    path = tmp_path / "old_cls.pt"
    model = _old_classification_checkpoint(path, data_root)

    loaded = load_trained_model(path)
    assert loaded.task.name == "classification" and loaded.cfg.model.backbone.arch == "resnet18"
    assert (loaded.cfg.data.augment.policy, loaded.cfg.data.augment.min_scale) == ("cifar", 0.5)
    assert loaded.cfg.model.backbone.stem_type == "" and loaded.cfg.data.val_fraction == 0.2
    assert loaded.meta == {"classes": ["class0", "class1", "class2"]}  # numbered as the head has rows
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))

    # Its real images cannot be labelled (their folders are not the numbered classes): random inputs.
    out = tmp_path / "exported"
    args = [str(path), "--out", str(out), "--formats", "torchscript", "--num-images", "2", "--random"]
    assert _tool("export").main(args) == 0
    assert json.loads((out / "old_cls.json").read_text())["task_meta"] == loaded.meta


def test_an_old_detection_checkpoint_loads_with_its_categories(tmp_path):
    cfg = DetectionConfig()
    m = cfg.model
    m.backbone.arch, m.backbone.norm, m.fpn_channels = "resnet18", "bn", 32
    m.min_size, m.max_size, m.box_score_thresh = [64], 96, 0.0
    m.category_ids, m.class_names = [5, 7], ["box", "disc"]
    torch.manual_seed(0)
    model = build_detector(m, 3, load_weights=False).eval()
    config = config_to_dict(cfg)
    # norm=auto meant frozen_bn with pretrained weights, else bn: these weights were trained with bn.
    old_backbone = {
        "arch": "resnet18",
        "weights": "",
        "frozen_stages": -1,
        "norm": "auto",
        "norm_eval": False,
        "gn_groups": 32,
    }
    config["model"] = _flat_model_section(config["model"], old_backbone)
    torch.save({"model": model.state_dict(), "config": config, "epoch": 3}, tmp_path / "old_det.pt")

    loaded = load_trained_model(tmp_path / "old_det.pt")  # no data folder: the config has the classes
    assert loaded.task.name == "detection" and loaded.cfg.model.backbone.norm == "bn"
    categories = loaded.task.categories()
    assert categories.cat_ids == [5, 7] and categories.names == ["box", "disc"]
    x = [torch.rand(3, 64, 80)]
    with torch.no_grad():
        expected, got = model(x)[0], loaded.model(x)[0]
    assert len(got["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[key], expected[key])


def test_older_augmentation_keys_load_into_the_data_augment_section():
    seg = SegmentationTask.upgrade_config(
        {"aug": {"crop_size": [64, 64], "hflip": 0.2}, "data": {"root": "d"}}
    )
    seg_cfg = config_from_dict(SegmentationConfig, seg)
    assert (seg_cfg.data.augment.crop_size, seg_cfg.data.augment.hflip, seg_cfg.data.root) == (
        [64, 64],
        0.2,
        "d",
    )
    for flag, rotate in ((True, 10.0), (False, 0.0)):
        few = config_from_dict(FewShotConfig, FewShotTask.upgrade_config({"data": {"augment": flag}}))
        assert few.data.augment.rotate == rotate


def test_the_ema_weights_are_the_ones_loaded_when_present(cls_checkpoint, tmp_path):
    ckpt = torch.load(cls_checkpoint, weights_only=True)
    ema = {k: v.clone() for k, v in ckpt["model"].items()}
    ema["head.fc.bias"] = ema["head.fc.bias"] + torch.tensor([5.0, 0.0, -5.0])  # shifts every logit
    ckpt["ema"] = ema
    torch.save(ckpt, tmp_path / "ema.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        with_ema = load_trained_model(tmp_path / "ema.pt").model(x)
        without = load_trained_model(tmp_path / "ema.pt", use_ema=False).model(x)
    torch.testing.assert_close(with_ema - without, torch.tensor([[5.0, 0.0, -5.0]]).expand(2, 3))


def test_prediction_reads_no_backbone_weights(seg_checkpoint, tmp_path):
    """The config names where training started; the checkpoint holds the trained weights."""
    ckpt = torch.load(seg_checkpoint, weights_only=True)
    ckpt["config"]["model"]["backbone"]["weights"] = str(tmp_path / "never_read.pth")  # does not exist
    torch.save(ckpt, tmp_path / "best.pt")
    images = load_trained_model(seg_checkpoint).cfg.data.root + "/images"
    written = predict_folder(tmp_path / "best.pt", images, tmp_path / "masks", overlays=False)
    assert len(written) == 4
