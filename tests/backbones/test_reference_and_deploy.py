"""The classic parameter/MAC table, Conv+BN fusion and channels-last."""

import pytest
import torch

from backbones import (
    ResNet,
    count_macs,
    count_parameters,
    create_backbone,
    fuse_conv_bn,
    prepare_for_inference,
)
from tests.backbones.bn_statistics import randomize_bn

# He et al. 2016 / torchvision documentation: parameters (millions) and multiply-accumulates at 224x224 (G).
CLASSIC = {18: (11.7, 1.8), 34: (21.8, 3.6), 50: (25.6, 4.1), 101: (44.5, 7.9), 152: (60.2, 11.6)}


@pytest.mark.parametrize("depth", sorted(CLASSIC))
def test_parameters_and_macs_match_the_classic_table(depth):
    with torch.device("meta"):  # counting needs shapes only
        model = ResNet(depth, num_classes=1000, out_indices=(4,))
    params, macs = CLASSIC[depth]
    assert count_parameters(model) / 1e6 == pytest.approx(params, abs=0.1)
    assert count_macs(model) / 1e9 == pytest.approx(macs, abs=0.1)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50d", "seresnet50", "preact_resnet18"])
def test_fused_model_matches_to_1e4(arch):
    model = randomize_bn(create_backbone(arch, out_indices=(0, 2, 4))).eval()
    fused = fuse_conv_bn(model)
    remaining = [m for m in fused.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not arch.startswith("preact"):
        assert remaining == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    for name in expected:
        scale = expected[name].abs().max()
        torch.testing.assert_close(actual[name] / scale, expected[name] / scale, rtol=0, atol=1e-4)


def test_fast_path_is_channels_last_and_equal():
    model = randomize_bn(create_backbone("resnet18", out_indices=(4,))).eval()
    fast = prepare_for_inference(model)
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)["layer4"]
        actual = fast(x.contiguous(memory_format=torch.channels_last))["layer4"]
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.slow
def test_compiled_fast_path_is_equal():
    # Inductor with freezing: weights become constants of the compiled graph; outputs must not change.
    model = randomize_bn(create_backbone("resnet18", out_indices=(3, 4))).eval()
    fast = prepare_for_inference(model, compile=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        actual = fast(x.contiguous(memory_format=torch.channels_last))
    assert list(actual) == list(expected)
    for name in expected:
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4 * scale)
