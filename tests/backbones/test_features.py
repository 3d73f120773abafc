"""feature_info must describe exactly what forward returns, for every architecture and option."""

import pytest
import torch

from backbones import ARCHS, ResNet, arch_num_levels, create_backbone

VARIANT_KWARGS = [
    dict(depth=18),
    dict(depth=50, stem_type="deep", avg_down=True),
    dict(depth=18, stem_type="small"),
    dict(depth=50, output_stride=16),
    dict(depth=50, output_stride=8),
    dict(depth=34, output_stride=8, stem_type="small"),
    dict(depth=18, preact=True),
    dict(depth=50, preact=True, output_stride=16),
    dict(depth=50, se=True, groups=32, width_per_group=4),
    dict(depth=18, in_chans=1),
    dict(depth=18, in_chans=5, drop_path_rate=0.1, zero_init_last=True),
]


def check_feature_info(model: ResNet, size: int = 64) -> None:
    model.eval()
    x = torch.randn(1, model.in_chans, size, size)
    with torch.no_grad():
        features = model(x)
    assert list(features) == model.feature_info.names
    for (name, tensor), info in zip(features.items(), model.feature_info):
        assert info.name == name
        assert tensor.shape[1] == info.channels, name
        assert size // tensor.shape[-1] == info.stride, name


@pytest.mark.parametrize("kwargs", VARIANT_KWARGS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_feature_info_matches_forward_for_variants(kwargs):
    check_feature_info(ResNet(out_indices=(0, 1, 2, 3, 4), **kwargs))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_feature_info_matches_forward_for_every_arch(arch):
    # Every level: 0..4, or 0..3 for the 3-stage CIFAR nets.
    check_feature_info(create_backbone(arch, out_indices=tuple(range(arch_num_levels(arch)))))


def test_default_strides_and_channels():
    info = create_backbone("resnet50", out_indices=(0, 1, 2, 3, 4)).feature_info
    assert [(i.name, i.channels, i.stride) for i in info] == [
        ("stem", 64, 2),
        ("layer1", 256, 4),
        ("layer2", 512, 8),
        ("layer3", 1024, 16),
        ("layer4", 2048, 32),
    ]
    assert ResNet(18, stem_type="small").feature_info.strides == [1, 2, 4, 8]
    assert ResNet(50, output_stride=8).feature_info.strides == [4, 8, 8, 8]


def test_out_indices_negative_and_order():
    model = ResNet(18, out_indices=(-1, 2, 0)).eval()
    assert model.feature_info.names == ["layer4", "layer2", "stem"]
    features = model(torch.randn(1, 3, 64, 64))
    assert list(features) == ["layer4", "layer2", "stem"]


def test_forward_stops_at_the_last_requested_level():
    model = ResNet(18, out_indices=(1,)).eval()
    called = []
    model.layer2.register_forward_hook(lambda *args: called.append("layer2"))
    model(torch.randn(1, 3, 32, 32))
    assert called == []
    assert model.min_input_size == 4


def test_dilated_outputs_equal_torchvision_replace_stride_with_dilation():
    import torchvision

    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    ours = ResNet(50, output_stride=8, out_indices=(4,)).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        torch.testing.assert_close(ours(x)["layer4"], expected, rtol=1e-5, atol=1e-5)


def test_variant_options_take_effect():
    model = ResNet(50, zero_init_last=True, drop_path_rate=0.2)
    assert torch.count_nonzero(model.layer1[0].bn3.weight) == 0
    rates = [
        block.drop_path.drop_prob
        for stage in (model.layer1, model.layer4)
        for block in stage
        if hasattr(block.drop_path, "drop_prob")
    ]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.2)
    assert isinstance(ResNet(50, stem_type="deep", avg_down=True).layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert ResNet(18, stem_type="small").conv1.kernel_size == (3, 3)


def test_backbone_demo_prints_every_depth(capsys):
    from tools import demo_backbone

    assert demo_backbone.main(["--size", "64", "--frozen-stages", "2"]) == 0
    output = capsys.readouterr().out
    for depth in (18, 34, 50, 101, 152):
        assert f"ResNet-{depth}:" in output
    assert "layer4 (1, 2048, 2, 2)" in output and "frozen_stages=2" in output
