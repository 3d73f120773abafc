"""Every shipped detection config loads into the typed schema; the COCO one is the standard 1x recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.detection.config import DetectionConfig
from tasks.engine.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "detection").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path, [], DetectionConfig)
    assert cfg.model.backbone.arch.startswith("resnet") and cfg.train.epochs > 0


def test_coco_1x_recipe():
    cfg = load_config(CONFIGS[0].parent / "faster_rcnn_r50_fpn_coco.yaml", [], DetectionConfig)
    assert (cfg.model.backbone.arch, cfg.model.min_size, cfg.model.max_size) == ("resnet50", [800], 1333)
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.milestones, cfg.train.scheduler) == (
        0.02,
        12,
        [8, 11],
        "multistep",
    )
    assert cfg.train.batch_size * 8 == 16 and cfg.model.backbone.frozen_stages == 1
    assert cfg.model.backbone.norm == "frozen_bn"


def test_unknown_detection_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'box_score_thresh'"):
        load_config(CONFIGS[0], ["model.box_score_thres=0.1"], DetectionConfig)
