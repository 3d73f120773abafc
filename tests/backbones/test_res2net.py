"""Res2Net (Gao et al. 2019): timm's block in our ResNet; timm checkpoints give timm's logits."""

import pytest
import timm
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from backbones import Bottle2neck, create_backbone, fuse_conv_bn, load_pretrained
from backbones.weights import resolve_source, timm_url
from tests.backbones.bn_statistics import randomize_bn

RES2NETS = ["res2net50_26w_4s", "res2net50_48w_2s", "res2net101_26w_4s"]


@pytest.mark.parametrize("arch", RES2NETS)
def test_timm_checkpoint_gives_timm_logits(arch, tmp_path):
    torch.manual_seed(0)
    reference = randomize_bn(timm.create_model(arch, pretrained=False)).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(reference.state_dict(), path)
    ours = create_backbone(arch, out_indices=(4,), num_classes=1000)
    report = load_pretrained(ours, path)
    assert report.missing == [] and report.unexpected == [] and report.reshaped == []  # no renaming
    ours.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = ours(x)["layer4"]
        torch.testing.assert_close(features, reference.forward_features(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.forward_head(features), reference(x), rtol=1e-5, atol=1e-5)


def test_dilated_res2net_equals_timm_output_stride_16(tmp_path):
    reference = randomize_bn(timm.create_model("res2net50_48w_2s", output_stride=16)).eval()
    path = tmp_path / "r2.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    ours = create_backbone("res2net50_48w_2s", weights=str(path), out_indices=(4,), output_stride=16).eval()
    assert ours.feature_info.strides == [16]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["layer4"], reference.forward_features(x), rtol=1e-5, atol=1e-5)


def test_block_layout_follows_the_paper():
    model = create_backbone("res2net50_26w_4s")
    first, second = model.layer1[0], model.layer1[1]
    assert isinstance(first, Bottle2neck)
    # width = floor(64 * 26 / 64) = 26 channels per split, 4 splits; 3 of them get a 3x3 conv.
    assert first.conv1.out_channels == 26 * 4 and len(first.convs) == 3
    assert all(conv.in_channels == conv.out_channels == 26 for conv in first.convs)
    # "stage" type: the first block of a stage average-pools its last split, the others pass it on.
    assert isinstance(first.pool, nn.AvgPool2d) and second.pool is None
    assert model.layer2[0].pool.stride == 2 and model.layer2[0].convs[0].stride == (2, 2)
    assert len(create_backbone("res2net50_48w_2s").layer1[0].convs) == 1  # scale 2: one 3x3 conv


def test_timm_pretrained_tags_resolve_without_download():
    for arch in RES2NETS:
        url = f"https://huggingface.co/timm/{arch}.in1k/resolve/main/model.safetensors"
        assert timm_url(f"{arch}.in1k") == url
        assert resolve_source(f"timm/{arch}.in1k", arch=arch) == url


def test_norm_layer_zero_init_and_drop_path_reach_the_blocks():
    frozen = create_backbone("res2net50_48w_2s", norm_layer=FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert isinstance(frozen.layer3[0].bns[0], FrozenBatchNorm2d)
    grouped = create_backbone("res2net50_26w_4s", norm_layer=lambda channels: nn.GroupNorm(2, channels))
    assert isinstance(grouped.layer1[0].bns[0], nn.GroupNorm)
    model = create_backbone("res2net50_26w_4s", zero_init_last=True, drop_path_rate=0.1, se=True)
    assert all(torch.count_nonzero(block.bn3.weight) == 0 for block in model.layer4)
    assert model.layer4[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert model.layer1[0].se is not None
    with pytest.raises(ValueError, match="preact=True needs block 'basic' or 'bottleneck'"):
        create_backbone("res2net50_26w_4s", preact=True)


def test_frozen_stages_hold_weights_and_statistics():
    model = create_backbone("res2net50_48w_2s", out_indices=(2, 4), frozen_stages=2)
    model.load_state_dict(model.state_dict())  # counts as loaded: freezing it does not warn
    model.eval()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    sum(f.square().mean() for f in model(torch.randn(2, 3, 64, 64)).values()).backward()
    torch.optim.SGD(trainable, lr=0.1).step()
    after = model.state_dict()
    changed = {
        k for k in before if not k.endswith("num_batches_tracked") and not torch.equal(before[k], after[k])
    }
    assert not any(k.startswith(("conv1.", "bn1.", "layer1.", "layer2.")) for k in changed)
    assert {"layer3.0.bns.0.running_mean", "layer4.0.convs.0.weight"} <= changed


def test_fused_res2net_gives_the_same_outputs():
    model = randomize_bn(create_backbone("res2net50_48w_2s", out_indices=(1, 4))).eval()
    fused = fuse_conv_bn(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    for name in expected:
        scale = expected[name].abs().max()
        torch.testing.assert_close(actual[name] / scale, expected[name] / scale, rtol=0, atol=1e-4)
