"""Bad arguments raise ValueError naming the allowed values."""

import pytest
import torch

from backbones import ResNet, create_backbone


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(depth=42), r"depth must be one of \[18, 34, 50, 101, 152\]"),
        (dict(out_indices=(5,)), r"out_indices entries must be in \[-5, .*4\]"),
        (dict(out_indices=(1, -4)), "names a level twice"),
        (dict(frozen_stages=5), r"frozen_stages must be one of \[-1, 0, 1, 2, 3, 4\]"),
        (dict(output_stride=4), r"output_stride must be one of \[8, 16, 32\]"),
        (dict(stem_type="big"), "stem_type must be one of"),
        (dict(in_chans=0), "in_chans must be a positive integer"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**{"depth": 18, **kwargs})


def test_unknown_arch_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: .*resnet50"):
        create_backbone("resnet51")


def test_wrong_channel_count_and_too_small_input():
    model = ResNet(18).eval()
    with pytest.raises(ValueError, match="expected 3 input channels .* got 1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="smaller than the network stride 32"):
        model(torch.randn(1, 3, 16, 64))
    with pytest.raises(ValueError, match="4-D batch"):
        model(torch.randn(3, 64, 64))
