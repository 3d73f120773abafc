"""`model.backbone.dcn_stages` reaches the backbone under every task's head."""

from __future__ import annotations

from dataclasses import replace

import pytest
from torch import nn

from backbones import ModulatedDeformConv2d, ResNet


def _backbone(model: nn.Module) -> ResNet:
    return next(m for m in model.modules() if isinstance(m, ResNet))


def _classifier(backbone: dict) -> nn.Module:
    from tasks.classification import ClassificationConfig, build_classifier

    cfg = ClassificationConfig()
    cfg.model.backbone = replace(cfg.model.backbone, **backbone)
    return build_classifier(cfg.model, 3, load_weights=False)


def _detector(backbone: dict) -> nn.Module:
    from tasks.detection.config import DetectionConfig
    from tasks.detection.model import build_detector

    cfg = DetectionConfig()
    cfg.model.backbone = replace(cfg.model.backbone, **backbone)
    return build_detector(cfg.model, 3, load_weights=False)


def _unet(backbone: dict) -> nn.Module:
    from tasks.segmentation.config import SegmentationConfig
    from tasks.segmentation.model import build_unet

    cfg = SegmentationConfig()
    cfg.model.backbone = replace(cfg.model.backbone, **backbone)
    return build_unet(cfg.model, load_weights=False)


def _fewshot(backbone: dict) -> nn.Module:
    from tasks.fewshot.config import FewShotConfig
    from tasks.fewshot.task import build_net_from_config

    cfg = FewShotConfig()
    cfg.model.backbone = replace(cfg.model.backbone, **backbone)
    return build_net_from_config(cfg, 3, load_weights=False)


@pytest.mark.parametrize("build", [_classifier, _detector, _unet, _fewshot])
def test_dcn_stages_make_those_stages_deformable_in_every_task(build):
    backbone = _backbone(build({"arch": "resnet18", "dcn_stages": [3, 4]}))
    deformable = {
        name.split(".")[0] for name, m in backbone.named_modules() if isinstance(m, ModulatedDeformConv2d)
    }
    assert backbone.dcn_stages == (3, 4) and deformable == {"layer3", "layer4"}
    plain = _backbone(build({"arch": "resnet18"}))
    assert plain.dcn_stages == () and not any(isinstance(m, ModulatedDeformConv2d) for m in plain.modules())
