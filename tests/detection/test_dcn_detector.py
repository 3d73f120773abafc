"""Faster R-CNN on a backbone with deformable convs: trains, and its checkpoint rebuilds the same detector."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from backbones import ModulatedDeformConv2d
from tasks.detection.config import DetectionConfig
from tasks.detection.task import DetectionTask
from tasks.engine.config import load_config
from tasks.engine.loading import load_trained_model
from tasks.engine.trainer import Trainer

DCN_CONFIG = (
    Path(__file__).resolve().parents[2] / "configs" / "detection" / "faster_rcnn_r50_fpn_dcn_coco.yaml"
)


def _offsets(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: module.conv_offset.weight.detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, ModulatedDeformConv2d)
    }


@pytest.mark.slow
def test_a_dcn_detector_trains_and_its_checkpoint_reloads_with_equal_outputs(
    coco_root, tmp_path, tiny_det_config
):
    run = tmp_path / "run"
    cfg = tiny_det_config(run, f"data.root={coco_root}", "model.backbone.dcn_stages=[3,4]")
    trainer = Trainer(cfg, DetectionTask(cfg))
    backbone = trainer.model.backbone.body
    assert backbone.dcn_stages == (3, 4)
    assert all(w.abs().sum() == 0 for w in _offsets(trainer.model).values())  # the plain detector at step 0
    trainer.fit()
    trained = _offsets(trainer.model)
    assert len(trained) == 4 and all(w.abs().sum() > 0 for w in trained.values())  # the steps moved them

    loaded = load_trained_model(run / "checkpoints" / "last.pt")
    assert loaded.cfg.model.backbone.dcn_stages == [3, 4]
    for name, weight in _offsets(loaded.model).items():
        torch.testing.assert_close(weight, trained[name], rtol=0, atol=0)
    reference = trainer._eval_model().eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    with torch.no_grad():
        expected, got = reference(images), loaded.model(images)
        folded = loaded.inference_model()(images)  # what the predict tool runs
    for want, have, fast in zip(expected, got, folded, strict=True):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(have[key], want[key], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fast[key], want[key], rtol=1e-3, atol=1e-3)


def test_the_shipped_dcn_config_is_mmdets_c3_c5_on_the_coco_recipe():
    cfg = load_config(DCN_CONFIG, [], DetectionConfig)
    assert cfg.model.backbone.dcn_stages == [2, 3, 4]  # mmdet's stages c3-c5 = layer2..layer4
    assert (cfg.model.backbone.arch, cfg.model.backbone.weights) == ("resnet50", "IMAGENET1K_V1")
    assert (cfg.train.epochs, cfg.train.milestones) == (12, [8, 11])


def test_bad_dcn_stages_fail_before_the_run_folder_exists(coco_root, tmp_path, train_det_main, capsys):
    run = tmp_path / "run"
    assert train_det_main(run, f"data.root={coco_root}", "model.backbone.dcn_stages=[5]") == 2
    message = "model.backbone.dcn_stages=[5]: expected distinct stage levels of resnet18 from [1, 2, 3, 4]"
    assert re.search(re.escape(message), capsys.readouterr().err)
    assert not run.exists()
