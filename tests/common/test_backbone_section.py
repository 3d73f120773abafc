"""The shared `model.backbone:` section builds the same backbone under every task's head."""

from __future__ import annotations

import pytest
from torch import nn

from backbones import ResNet


def _backbone(model: nn.Module) -> ResNet:
    return next(m for m in model.modules() if isinstance(m, ResNet))


def _classifier(arch: str, **backbone) -> nn.Module:
    from tasks.classification import ClassificationConfig, build_classifier

    cfg = ClassificationConfig()
    vars(cfg.model.backbone).update(arch=arch, **backbone)
    return build_classifier(cfg.model, 3, load_weights=False)


def _detector(arch: str, **backbone) -> nn.Module:
    from tasks.detection.config import DetectionConfig
    from tasks.detection.model import build_detector

    cfg = DetectionConfig()
    vars(cfg.model.backbone).update(arch=arch, **backbone)
    return build_detector(cfg.model, 3, load_weights=False)


def _unet(arch: str, **backbone) -> nn.Module:
    from tasks.segmentation.config import SegmentationConfig
    from tasks.segmentation.model import build_unet

    cfg = SegmentationConfig()
    vars(cfg.model.backbone).update(arch=arch, **backbone)
    return build_unet(cfg.model, load_weights=False)


def _fewshot(arch: str, **backbone) -> nn.Module:
    from tasks.fewshot.config import FewShotConfig
    from tasks.fewshot.task import build_net_from_config

    cfg = FewShotConfig()
    vars(cfg.model.backbone).update(arch=arch, **backbone)
    return build_net_from_config(cfg, 3, load_weights=False)


@pytest.mark.parametrize("build", [_classifier, _detector, _unet, _fewshot])
def test_a_resnet_d_keeps_its_deep_stem_in_every_task(build):
    """Three tools used to pass stem_type="default", which gave resnet*d a 7x7 stem (and left timm's
    resnet50d stem weights unloaded)."""
    deep = _backbone(build("resnet18d"))
    assert isinstance(deep.conv1, nn.Sequential) and len(deep.conv1) > 1  # three 3x3 convs
    plain = _backbone(build("resnet18"))
    assert isinstance(plain.conv1, nn.Conv2d) and plain.conv1.kernel_size == (7, 7)


@pytest.mark.parametrize("build", [_classifier, _detector, _unet, _fewshot])
def test_zero_init_last_starts_every_residual_block_as_identity(build):
    """`zero_init_last` reaches the backbone under every head: each block's last norm starts at 0 (its
    residual branch adds nothing), and the default keeps the usual init of 1."""
    zeroed = _backbone(build("resnet18", zero_init_last=True))
    usual = _backbone(build("resnet18"))
    for stage in ("layer1", "layer4"):
        assert all(bool((block.bn2.weight == 0).all()) for block in getattr(zeroed, stage))
        assert all(bool((block.bn2.weight == 1).all()) for block in getattr(usual, stage))
    assert bool((zeroed.bn1.weight == 1).all())  # the stem's norm is not a block's last
