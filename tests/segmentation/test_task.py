"""SegmentationTask pieces that need no training run: targets, deep-supervision loss, resume signature."""

import pytest
import torch
import torch.nn.functional as F

from tasks.common.backbone import BackboneConfig
from tasks.segmentation.config import SegmentationConfig, SegmentationModelConfig
from tasks.segmentation.task import SegmentationTask, make_targets


def test_binary_targets_keep_ignore_pixels():
    mask = torch.tensor([[[0, 1, 255]]])
    assert make_targets(mask, "binary", []).tolist() == [[[[0.0, 1.0, 255.0]]]]
    assert make_targets(mask, "multiclass", []) is mask


def test_deep_supervision_loss_is_the_weighted_mean_of_the_heads():
    task = SegmentationTask(
        SegmentationConfig(model=SegmentationModelConfig(mode="multiclass", num_classes=3))
    )
    mask = torch.randint(0, 3, (2, 16, 16))
    logits = torch.randn(2, 3, 16, 16)
    aux = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    out = task.compute_loss((logits, aux), mask)
    up = [F.interpolate(a, size=(16, 16), mode="bilinear", align_corners=False) for a in aux]
    expected = task.loss_fn(logits, mask) + 0.5 * task.loss_fn(up[0], mask) + 0.25 * task.loss_fn(up[1], mask)
    torch.testing.assert_close(out["loss"], expected / 1.75)
    torch.testing.assert_close(out["loss_main"], task.loss_fn(logits, mask))


def test_resume_signature_ignores_initialisation_and_freezing():
    a = SegmentationTask(
        SegmentationConfig(model=SegmentationModelConfig(backbone=BackboneConfig(frozen_stages=-1)))
    )
    pretrained = BackboneConfig(weights="IMAGENET1K_V1", frozen_stages=2)
    b = SegmentationTask(SegmentationConfig(model=SegmentationModelConfig(backbone=pretrained)))
    c = SegmentationTask(
        SegmentationConfig(model=SegmentationModelConfig(decoder_channels=[128, 64, 32, 16, 16]))
    )
    assert a.model_signature() == b.model_signature() != c.model_signature()


def test_bad_mode_fails_when_the_task_is_built():
    with pytest.raises(ValueError, match="model.mode must be one of"):
        SegmentationTask(SegmentationConfig(model=SegmentationModelConfig(mode="semantic")))
