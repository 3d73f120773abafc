"""Losses (smp) with ignore pixels and deep supervision; sliding-window inference; logits -> labels."""

import pytest
import torch
from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss, SoftCrossEntropyLoss
from torch import nn

from tasks.segmentation.inference import (
    gaussian_weights,
    labels_to_region_targets,
    logits_to_channels,
    logits_to_labels,
    predict_logits,
)
from tasks.segmentation.smp_parts import build_loss
from tasks.segmentation.task import make_targets


def test_dice_ce_equals_the_smp_terms():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    expected = DiceLoss("multiclass")(logits, target) + SoftCrossEntropyLoss(smooth_factor=0.0)(
        logits, target
    )
    torch.testing.assert_close(
        build_loss("multiclass", "dice_ce", ignore_index=None)(logits, target), expected
    )
    binary = torch.randint(0, 2, (2, 1, 8, 8)).float()
    expected = DiceLoss("binary")(logits[:, :1], binary) + 0.5 * SoftBCEWithLogitsLoss()(
        logits[:, :1], binary
    )
    got = build_loss("binary", "dice_ce", ignore_index=None, ce_weight=0.5)(logits[:, :1], binary)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "mode,name",
    [("multiclass", "dice_ce"), ("binary", "dice_focal"), ("binary", "dice_ce"), ("multilabel", "dice_ce")],
)
def test_ignored_pixels_do_not_change_the_loss(mode, name):
    mask = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 8, 8))
    mask[:, :, 6:] = 255
    channels = {"multiclass": 3, "binary": 1, "multilabel": 2}[mode]
    target = make_targets(mask, mode, [[1], [1]])
    loss = build_loss(mode, name)
    logits = torch.randn(2, channels, 8, 8)
    changed = logits.clone()
    changed[..., 6:] = 50.0  # anything under ignore pixels
    torch.testing.assert_close(loss(logits, target), loss(changed, target))


def test_region_targets_and_label_conversion():
    labels = torch.tensor([[[0, 1, 2, 3, 255]]])
    regions = [[1, 2, 3], [2, 3], [3]]
    targets = labels_to_region_targets(labels, regions)
    assert targets[0, :, 0].tolist() == [[0, 1, 1, 1, 255], [0, 0, 1, 1, 255], [0, 0, 0, 1, 255]]
    logits = torch.where(targets == 1, 5.0, -5.0)
    assert logits_to_labels(logits, "multilabel", regions=regions)[0, 0, :4].tolist() == [0, 1, 2, 3]
    binary = torch.tensor([[[[-1.0, 2.0]]]])
    assert logits_to_labels(binary, "binary").tolist() == [[[0, 1]]]
    assert logits_to_channels(binary, "binary", 2).shape == (1, 2, 1, 2)


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    model = nn.Conv2d(1, 2, 1)  # position-independent: every tiling must give the same logits
    image = torch.randn(1, 1, 70, 90)
    with torch.no_grad():
        whole = model(image)
        tiled = predict_logits(model, image, tile_size=(32, 48), overlap=0.5, batch_size=3)
    torch.testing.assert_close(tiled, whole)
    assert predict_logits(model, image, tile_size=(128, 128)).shape == whole.shape  # tile larger than image


def test_gaussian_importance_map():
    w = gaussian_weights((9, 9))
    assert w[4, 4] == 1.0 and w.min() > 0 and w[0, 0] < w[2, 2] < w[4, 4]
