"""Encoder norms for small batches: GroupNorm and InstanceNorm U-Nets train on one 32x32 crop."""

import pytest
import torch
import torchvision
from torch import nn

from tasks.common.backbone import BackboneConfig, build_backbone
from tasks.segmentation.config import SegmentationModelConfig
from tasks.segmentation.model import build_unet

NORM_TYPES = {"gn": nn.GroupNorm, "in": nn.InstanceNorm2d}


def _unet(norm: str, encoder_depth: int):
    cfg = SegmentationModelConfig(
        backbone=BackboneConfig(arch="resnet18", in_chans=1, norm=norm),
        num_classes=2,
        mode="binary",
        encoder_depth=encoder_depth,
        decoder_channels=[32, 16, 16, 16, 16][:encoder_depth],
    )
    return build_unet(cfg).train()


# With norm=bn this step raised in layer4's BatchNorm ("Expected more than 1 value per channel when
# training"): at 32 px layer4 is 1x1, so a batch of one gives it a single value per channel. The decoder's
# BatchNorm (model.decoder_norm) is fine here: its coarsest block sees 2x2.
@pytest.mark.parametrize("norm,encoder_depth", [("gn", 5), ("in", 4)])
def test_unet_with_a_small_batch_norm_trains_a_step_at_batch_1(norm, encoder_depth):
    model = _unet(norm, encoder_depth)
    norms = [m for m in model.encoder.modules() if isinstance(m, (nn.BatchNorm2d, *NORM_TYPES.values()))]
    assert norms and all(isinstance(m, NORM_TYPES[norm]) for m in norms)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.encoder.backbone.conv1.weight.detach().clone()
    logits = model(torch.randn(1, 1, 32, 32))
    loss = nn.functional.binary_cross_entropy_with_logits(logits, (torch.rand(1, 1, 32, 32) > 0.5).float())
    loss.backward()
    optimizer.step()
    assert logits.shape == (1, 1, 32, 32) and torch.isfinite(loss)
    assert not torch.equal(model.encoder.backbone.conv1.weight, before)


def test_instance_norm_needs_more_than_one_pixel_per_level():
    # InstanceNorm normalises each image's channel over its pixels: a 1x1 level (layer4 of a 32 px crop)
    # has nothing to normalise over. Larger crops or encoder_depth=4 keep every level at 2x2 or more.
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        _unet("in", 5)(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("norm", ["gn", "in"])
def test_pretrained_batchnorm_scale_and_shift_load_into_group_and_instance_norms(norm, tmp_path):
    reference = torchvision.models.resnet18()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    cfg = BackboneConfig(
        arch="resnet18", weights=str(tmp_path / "resnet18.pth"), norm=norm, partial_load=True
    )
    backbone = build_backbone(cfg, out_indices=(4,))
    for name in ("bn1", "layer1.0.bn1", "layer3.0.downsample.1", "layer4.1.bn2"):
        ours, theirs = backbone.get_submodule(name), reference.get_submodule(name)
        assert isinstance(ours, NORM_TYPES[norm])
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
        torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=0)
    # Only BatchNorm's statistics have no place here, which is why the load is partial.
    report = backbone.load_report
    assert not report.missing and not report.reshaped
    assert report.unexpected and all(
        key.endswith(("running_mean", "running_var", "num_batches_tracked")) for key in report.unexpected
    )
