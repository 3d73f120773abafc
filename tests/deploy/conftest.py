"""Tiny synthetic datasets and checkpoints in the format the training tools write (task, config, model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.engine.checkpoint import CHECKPOINT_VERSION, save_checkpoint
from tasks.engine.config import config_to_dict


def _image_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 8, size: int = 40) -> Path:
    """ImageFolder tree; each class has its own colour so a trained model could tell them apart."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
            pixels[..., k] += 120
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _seg_folder(root: Path, n: int = 4, size: int = 48) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
        labels = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2).astype(np.uint8)
        image = (40 + 80 * labels + rng.normal(0, 10, labels.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(labels * 255).save(root / "masks" / f"img{i}.png")
    return root


def _coco_folder(root: Path, n: int = 4, size=(72, 96)) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        h, w = size
        pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        x, y = int(rng.integers(0, w - 24)), int(rng.integers(0, h - 24))
        pixels[y : y + 24, x : x + 24] = (220, 40, 40)
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 5,
                "bbox": [x, y, 24, 24],
                "area": 576,
                "iscrowd": 0,
            }
        )
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 5, "name": "box"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def _save(model, cfg, path: Path, task: str, task_meta: dict | None = None) -> Path:
    checkpoint = {
        "model": model.state_dict(),
        "config": config_to_dict(cfg),
        "task": {"name": task, "version": CHECKPOINT_VERSION},
        "epoch": 1,
    }
    if task_meta is not None:
        checkpoint["task_meta"] = task_meta
    save_checkpoint(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def cls_checkpoint(tmp_path_factory) -> Path:
    """ResNet-18 classifier (3 classes, 32 px) briefly trained on its ImageFolder data."""
    from tasks.classification import ClassificationConfig, ClassificationTask, build_classifier

    root = tmp_path_factory.mktemp("cls")
    data = _image_folder(root / "images")
    cfg = ClassificationConfig()
    cfg.model.backbone.arch = "resnet18"
    cfg.data.root = str(data)
    cfg.data.image_size = 32
    cfg.data.val_fraction = 0.5
    torch.manual_seed(0)
    model = build_classifier(cfg.model, 3)
    # A few real training steps (the colours separate the classes): quantization and pruning are then
    # judged on a model with real decision margins and BN statistics, not on a random network.
    from tasks.deploy.inputs import real_samples

    images, labels = real_samples(ClassificationTask(cfg), 24, "train")
    x, y = torch.stack(images), torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _save(model.eval(), cfg, root / "best.pt", "classification", {"classes": ["cat", "dog", "owl"]})


@pytest.fixture(scope="session")
def seg_checkpoint(tmp_path_factory) -> Path:
    """Small binary U-Net (ResNet-18 encoder, depth 3, narrow decoder) and its 48x48 folder data."""
    from tasks.segmentation.config import SegmentationConfig
    from tasks.segmentation.model import build_unet

    root = tmp_path_factory.mktemp("seg")
    cfg = SegmentationConfig()
    cfg.model.backbone.arch = "resnet18"
    cfg.model.backbone.in_chans = 1
    cfg.model.mode = "binary"
    cfg.model.encoder_depth = 3
    cfg.model.decoder_channels = [16, 8, 8]
    cfg.data.root = str(_seg_folder(root / "data"))
    cfg.data.value_map = {0: 0, 255: 1}
    torch.manual_seed(0)
    return _save(build_unet(cfg.model).eval(), cfg, root / "best.pt", "segmentation")


@pytest.fixture(scope="session")
def det_checkpoint(tmp_path_factory) -> Path:
    """Tiny Faster R-CNN (ResNet-18 FPN, 64 px) whose box threshold is 0 so parity sees real boxes."""
    from tasks.detection.config import DetectionConfig
    from tasks.detection.model import build_detector

    root = tmp_path_factory.mktemp("det")
    cfg = DetectionConfig()
    m = cfg.model
    m.backbone.arch, m.backbone.norm, m.fpn_channels = "resnet18", "bn", 32
    m.min_size, m.max_size = [64], 96
    m.rpn_pre_nms_top_n_test, m.rpn_post_nms_top_n_test = 100, 30
    m.box_score_thresh, m.box_detections_per_img = 0.0, 10
    m.category_ids, m.class_names = [5], ["box"]
    cfg.data.root = str(_coco_folder(root / "data"))
    cfg.data.val_fraction = 0.5
    torch.manual_seed(0)
    return _save(build_detector(m, 2).eval(), cfg, root / "best.pt", "detection")


@pytest.fixture(scope="session")
def fewshot_checkpoint(tmp_path_factory) -> Path:
    """ProtoNet (ResNet-18 features, no head) as tools/train_fewshot.py saves it; no data is needed."""
    from tasks.fewshot.config import FewShotConfig
    from tasks.fewshot.task import build_net_from_config

    root = tmp_path_factory.mktemp("fewshot")
    cfg = FewShotConfig()
    cfg.model.backbone.arch, cfg.model.method = "resnet18", "protonet"
    meta = {"base_classes": ["a", "b"], "val_classes": [], "novel_classes": [], "rotations": []}
    torch.manual_seed(0)
    net = build_net_from_config(cfg, 0, load_weights=False).eval()
    return _save(net, cfg, root / "best.pt", "fewshot", meta)
