"""Deformable convs (DCNv2) in chosen stages: the plain network at step 0, plain checkpoints load in full,
training deforms, and the layer is torchvision's deform_conv2d with a predicted offset and mask."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.ops import DeformConv2d, deform_conv2d

from backbones import (
    ModulatedDeformConv2d,
    ResNet,
    add_deformable_convs,
    count_macs,
    create_backbone,
    load_pretrained,
)
from backbones.dcn import offset_predictor_keys
from backbones.weights import WeightsMismatchError
from tasks.common.backbone import BackboneConfig, validate_backbone
from tasks.engine.config import ConfigError
from tests.backbones.bn_statistics import randomize_bn


def deformable_convs(model: nn.Module) -> dict[str, ModulatedDeformConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ModulatedDeformConv2d)}


def plain_twin(model: ResNet, arch: str, **kwargs) -> ResNet:
    """A plain backbone holding ``model``'s weights (everything but the offset predictors)."""
    plain = create_backbone(arch, **kwargs)
    offsets = set(offset_predictor_keys(model))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in offsets})
    return plain


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("resnet18", {}),
        ("resnet50", {}),
        ("resnet18", {"output_stride": 8}),  # dilated 3x3 convs, strides moved to dilation
        ("preact_resnet18", {}),
    ],
    ids=["resnet18", "resnet50", "resnet18-os8", "preact_resnet18"],
)
def test_a_deformable_backbone_starts_as_the_plain_one(arch, kwargs):
    """Offsets 0 and mask 2*sigmoid(0) = 1: the same function in train and eval mode.

    In float64, so that the check is to rounding: in float32 deform_conv2d's other summation order shows
    at 1e-5 after train-mode BatchNorm over a 2x2 layer4."""
    torch.manual_seed(0)
    plain = randomize_bn(create_backbone(arch, out_indices=(1, 2, 3, 4), **kwargs)).double()
    dcn = create_backbone(arch, out_indices=(1, 2, 3, 4), dcn_stages=(3, 4), **kwargs).double()
    incompatible = dcn.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(incompatible.missing_keys) == sorted(offset_predictor_keys(dcn))
    assert not incompatible.unexpected_keys
    assert len(deformable_convs(dcn)) == len(dcn.layer3) + len(dcn.layer4) and dcn.dcn_stages == (3, 4)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)  # train-mode BN still sees 4 values in layer4
    for training in (True, False):
        plain.train(training)
        dcn.train(training)
        with torch.no_grad():
            expected, out = plain(x), dcn(x)
        for name in expected:
            torch.testing.assert_close(out[name], expected[name], rtol=1e-9, atol=1e-9)


def test_a_torchvision_checkpoint_is_a_full_load_and_gives_torchvision_features(tmp_path):
    reference = randomize_bn(torchvision.models.resnet18()).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_backbone("resnet18", weights=str(path), dcn_stages=(3, 4), out_indices=(4,)).eval()
    report = model.load_report
    assert report.backbone_problems() == [] and report.missing == []
    assert report.initialised == sorted(offset_predictor_keys(model)) and len(report.initialised) == 8
    assert "new layers at their zero start" in str(report)
    # The same through load_pretrained on a model built first.
    again = load_pretrained(create_backbone("resnet18", dcn_stages=[2]), path)
    assert again.missing == [] and len(again.initialised) == 4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = nn.Sequential(*list(reference.children())[:-2])(x)
        torch.testing.assert_close(model(x)["layer4"], expected, rtol=1e-5, atol=1e-5)


def test_a_deformable_checkpoint_loads_back_and_a_plain_backbone_names_dcn_stages(tmp_path):
    trained = create_backbone("resnet18", dcn_stages=(3, 4))
    for conv in deformable_convs(trained).values():
        nn.init.normal_(conv.conv_offset.weight, std=0.01)
    path = tmp_path / "dcn.pth"
    torch.save({"model": {"backbone." + k: v for k, v in trained.state_dict().items()}}, path)
    reloaded = create_backbone("resnet18", weights=str(path), dcn_stages=(3, 4))
    assert reloaded.load_report.initialised == [] and reloaded.load_report.missing == []
    torch.testing.assert_close(reloaded.state_dict(), trained.state_dict())
    with pytest.raises(
        WeightsMismatchError, match=r"deformable convs in layer3, layer4: .*dcn_stages=\[3, 4\]"
    ):
        create_backbone("resnet18", weights=str(path))


def test_one_training_step_moves_the_offsets_and_the_network_deforms():
    torch.manual_seed(0)
    model = create_backbone("resnet18", out_indices=(4,), dcn_stages=(3, 4)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 3, 64, 64)
    model(x)["layer4"].square().mean().backward()
    for name, conv in deformable_convs(model).items():
        assert conv.conv_offset.weight.grad.abs().sum() > 0, name
        assert conv.conv_offset.bias.grad.abs().sum() > 0, name
    optimizer.step()
    offsets = [conv.conv_offset.weight.abs().max() for conv in deformable_convs(model).values()]
    assert min(offsets) > 0
    model.eval()
    plain = plain_twin(model, "resnet18", out_indices=(4,)).eval()
    with torch.no_grad():
        difference = (model(x)["layer4"] - plain(x)["layer4"]).abs().max()
    assert difference > 1e-3  # the same weights without the offsets and mask compute something else


def test_the_layer_is_torchvision_deform_conv2d_with_the_predicted_offset_and_mask():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2, offset_groups=2)
    nn.init.normal_(layer.conv_offset.weight, std=0.3)
    nn.init.normal_(layer.conv_offset.bias, std=0.3)
    x = torch.randn(2, 8, 11, 13)
    raw = layer.conv_offset(x)
    assert raw.shape[1] == 3 * 2 * 9  # 2*k*k offsets and k*k mask logits per offset group
    offset, mask = raw[:, : 2 * 2 * 9], 2 * torch.sigmoid(raw[:, 2 * 2 * 9 :])
    assert offset.abs().max() > 0.5 and (mask - 1).abs().max() > 0.1  # really off the regular grid
    expected = deform_conv2d(
        x, offset, layer.weight, layer.bias, stride=(2, 2), padding=(2, 2), dilation=(2, 2), mask=mask
    )
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    reference = DeformConv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=2)
    reference.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    torch.testing.assert_close(layer(x), reference(x, offset, mask), rtol=0, atol=0)


def test_from_conv_keeps_the_conv_and_starts_as_it():
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=True)
    layer = ModulatedDeformConv2d.from_conv(conv)
    assert (layer.stride, layer.padding, layer.dilation, layer.groups) == ((2, 2), (1, 1), (1, 1), 1)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    x = torch.randn(1, 6, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="numeric zero padding"):
        ModulatedDeformConv2d.from_conv(nn.Conv2d(6, 10, 3, padding=1, padding_mode="reflect"))


def test_bf16_autocast_on_cpu_runs_the_kernel_in_float32():
    """torchvision's deform_conv2d has no bf16 CPU kernel and no CPU autocast rule; amp=auto is bf16 there."""
    torch.manual_seed(0)
    model = create_backbone("resnet18", out_indices=(4,), dcn_stages=(3, 4)).eval()
    for conv in deformable_convs(model).values():
        nn.init.normal_(conv.conv_offset.weight, std=0.01)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)["layer4"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)["layer4"]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


def test_freezing_a_deformable_stage_freezes_its_offset_predictors():
    model = create_backbone("resnet18", dcn_stages=(2, 3), frozen_stages=2)
    convs = deformable_convs(model)
    frozen = [p for name, conv in convs.items() if name.startswith("layer2") for p in conv.parameters()]
    trainable = [p for name, conv in convs.items() if name.startswith("layer3") for p in conv.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert trainable and all(p.requires_grad for p in trainable)
    with pytest.warns(UserWarning, match="randomly initialised"):
        model.train()
    model(torch.randn(2, 3, 64, 64))["layer4"].sum().backward()
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in trainable)


@pytest.mark.parametrize(
    ("dcn_stages", "message"),
    [
        ((5,), r"dcn_stages entries must be in \[1, 2, 3, 4\] .* got 5"),
        ((0, 3), r"the stem cannot be deformable\), got 0"),
        ((3, 3), r"dcn_stages names a level twice: \(3, 3\)"),
        (("3",), r"dcn_stages entries must be in .* got '3'"),
    ],
)
def test_bad_dcn_stages_name_the_argument(dcn_stages, message):
    with pytest.raises(ValueError, match=message):
        ResNet(18, dcn_stages=dcn_stages)


def test_unsupported_blocks_are_refused_by_name():
    """Res2Net splits its 3x3 conv into several (timm's Bottle2neck): there is no one conv2 to replace."""
    model = nn.Module()
    model.layer1 = nn.Sequential(timm.models.res2net.Bottle2neck(64, 16, norm_layer=nn.BatchNorm2d))
    with pytest.raises(ValueError, match=r"dcn_stages=\[1\]: layer1.0 is a Bottle2neck; deformable convs"):
        add_deformable_convs(model, [1])


@pytest.mark.parametrize(
    ("arch", "value", "message"),
    [
        ("resnet18", [5], r"=\[5\]: expected distinct stage levels of resnet18 from \[1, 2, 3, 4\]"),
        ("resnet18", [0], r"=\[0\]: expected distinct stage levels"),
        ("resnet18", [2, 2], r"=\[2, 2\]: expected distinct stage levels"),
        ("resnet20", [4], r"=\[4\]: expected distinct stage levels of resnet20 from \[1, 2, 3\]"),  # 3 stages
        ("res2net50_26w_4s", [3], r"=\[3\]: res2net50_26w_4s splits each 3x3 conv into Res2Net groups"),
    ],
)
def test_bad_dcn_stages_in_a_config_name_the_key(arch, value, message):
    with pytest.raises(ConfigError, match=r"model\.backbone\.dcn_stages" + message):
        validate_backbone(BackboneConfig(arch=arch, dcn_stages=value))


def test_a_three_stage_net_takes_dcn_stages_up_to_its_last_stage():
    model = create_backbone("resnet20", dcn_stages=[3])
    assert model.dcn_stages == (3,) and len(deformable_convs(model)) == len(model.layer3)
    with pytest.raises(ValueError, match=r"dcn_stages entries must be in \[1, 2, 3\] .*got 4"):
        create_backbone("resnet20", dcn_stages=[4])


def test_count_macs_counts_a_deformable_conv_as_its_convolution():
    """torch has no FLOP formula for torchvision's op (it would count 0): ours adds only the offset convs."""
    plain = create_backbone("resnet18", out_indices=(4,))
    dcn = create_backbone("resnet18", out_indices=(4,), dcn_stages=(3, 4))
    shapes = {}
    for name, conv in deformable_convs(dcn).items():
        conv.conv_offset.register_forward_hook(
            lambda m, i, out, name=name: shapes.__setitem__(name, out.shape)
        )
    with torch.no_grad():
        dcn(torch.zeros(1, 3, 64, 64))
    offsets = sum(
        conv.conv_offset.weight[0].numel() * shapes[name].numel()
        for name, conv in deformable_convs(dcn).items()
    )
    assert count_macs(dcn, (1, 3, 64, 64)) == count_macs(plain, (1, 3, 64, 64)) + offsets
