"""The 3-stage CIFAR ResNets (He et al. 2016, section 4.2) and WRN-28-10 (Zagoruyko & Komodakis 2016)."""

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from backbones import (
    PreActBasicBlock,
    ResNet,
    ZeroPadShortcut,
    count_parameters,
    create_backbone,
    freeze_stage_norms,
    fuse_conv_bn,
    summary,
)
from tasks.common.backbone import BackboneConfig
from tasks.engine.config import ConfigError

# Parameters with a 10-class fc head, as the papers count them (millions): ResNet-20/56/110 with the
# parameter-free shortcut (option A), WRN-28-10 with projections.
PAPER_PARAMETERS = {"resnet20": 0.27, "resnet56": 0.85, "resnet110": 1.7, "wide_resnet28_10": 36.5}
CIFAR_ARCHS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wide_resnet28_10"]


def tiny_wrn(**kwargs) -> ResNet:
    """WRN-28-10's layout (pre-activation, 3 stages, projections) with one narrow block per stage."""
    layout = dict(layers=(1, 1, 1), block="basic", channels=(16, 32, 64), stem_type="small", stem_channels=16)
    return ResNet(depth=10, preact=True, **{**layout, **kwargs})


@pytest.mark.parametrize(("arch", "millions"), sorted(PAPER_PARAMETERS.items()))
def test_parameter_counts_match_the_papers(arch, millions):
    with torch.device("meta"):  # counting needs shapes only
        model = create_backbone(arch, num_classes=10)
    assert count_parameters(model) / 1e6 == pytest.approx(millions, rel=0.02)


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
def test_cifar_layout_three_stages_on_a_16_channel_stem(arch):
    with torch.device("meta"):
        model = create_backbone(arch, out_indices=(0, 1, 2, 3))
    depth = model.depth
    per_stage = (depth - 4) // 6 if arch.startswith("wide") else (depth - 2) // 6
    assert model.num_stages == 3 and model.num_levels == 4 and not hasattr(model, "layer4")
    assert [len(getattr(model, f"layer{k}")) for k in (1, 2, 3)] == [per_stage] * 3
    assert (
        model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.out_channels == 16
    )
    assert isinstance(model.maxpool, nn.Identity)
    widen = 10 if arch.startswith("wide") else 1
    assert [(i.name, i.channels, i.stride) for i in model.feature_info] == [
        ("stem", 16, 1),
        ("layer1", 16 * widen, 1),
        ("layer2", 32 * widen, 2),
        ("layer3", 64 * widen, 4),
    ]


def test_cifar_resnets_use_the_parameter_free_shortcut():
    model = create_backbone("resnet20")
    shortcuts = {
        name: block.downsample for name, block in model.named_modules() if hasattr(block, "downsample")
    }
    changing = {name: s for name, s in shortcuts.items() if s is not None}
    assert sorted(changing) == ["layer2.0", "layer3.0"]  # layer1 keeps 16 channels at stride 1
    assert all(isinstance(s, ZeroPadShortcut) and not list(s.parameters()) for s in changing.values())
    projection = create_backbone("resnet20", shortcut="projection")  # option B, for comparison
    assert isinstance(projection.layer2[0].downsample[0], nn.Conv2d)
    # Option B adds one 1x1 conv + BN per changing stage: 16*32 + 2*32 and 32*64 + 2*64.
    assert count_parameters(projection) - count_parameters(model) == 16 * 32 + 64 + 32 * 64 + 128


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    x = torch.randn(2, 16, 8, 8)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
    torch.testing.assert_close(ZeroPadShortcut(16, 32, stride=2)(x), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot reduce channels"):
        ZeroPadShortcut(32, 16, stride=1)
    with pytest.raises(ValueError, match="avg_down=True .* needs shortcut='projection'"):
        create_backbone("resnet20", avg_down=True)
    with pytest.raises(ValueError, match=r"shortcut must be one of \['projection', 'zero_pad'\]"):
        create_backbone("resnet20", shortcut="identity")


def test_wrn_blocks_are_preactivated_with_projections_where_the_width_changes():
    with torch.device("meta"):
        model = create_backbone("wide_resnet28_10")
    blocks = [block for k in (1, 2, 3) for block in getattr(model, f"layer{k}")]
    assert all(isinstance(block, PreActBasicBlock) for block in blocks)
    projected = [
        name for name, m in model.named_modules() if isinstance(m, PreActBasicBlock) and m.downsample
    ]
    assert projected == ["layer1.0", "layer2.0", "layer3.0"]  # 16 -> 160 at stride 1, then 2 and 2
    assert isinstance(model.layer1[0].downsample[0], nn.Conv2d) and len(model.layer1[0].downsample) == 1
    assert isinstance(model.final_norm[0], nn.BatchNorm2d)  # the paper's final BN-ReLU


def test_levels_of_a_three_stage_net():
    model = create_backbone("resnet20", out_indices=-1).eval()
    assert model.feature_info.names == ["layer3"]
    assert list(model(torch.randn(1, 3, 32, 32))) == ["layer3"]
    assert create_backbone("resnet20", out_indices=(-4, -2)).feature_info.names == ["stem", "layer2"]
    with pytest.raises(
        ValueError, match=r"must be in \[-4, .*3\] \(0=stem, 1..3=layer1..layer3 of this 3-stage"
    ):
        create_backbone("resnet20", out_indices=(4,))
    with pytest.raises(ValueError, match=r"frozen_stages must be one of \[-1, 0, 1, 2, 3\]"):
        create_backbone("resnet20", frozen_stages=4)
    with pytest.raises(ValueError, match=r"level must be in 0..3 for this 3-stage ResNet"):
        model.stage_modules(4)
    assert model.stage_modules(3) == [model.layer3, model.final_norm]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(in_chans=1),
        dict(drop_path_rate=0.2, zero_init_last=True),
        dict(norm_layer=lambda channels: nn.GroupNorm(4, channels)),
        dict(output_stride=8),
        dict(stem_type="default"),
    ],
    ids=["in_chans", "drop_path-zero_init", "groupnorm", "dilated", "imagenet-stem"],
)
def test_feature_info_matches_forward_with_options(kwargs):
    model = create_backbone("resnet20", out_indices=(0, 1, 2, 3), **kwargs).eval()
    x = torch.randn(1, model.in_chans, 32, 32)
    with torch.no_grad():
        features = model(x)
    assert list(features) == model.feature_info.names
    for tensor, info in zip(features.values(), model.feature_info):
        assert tensor.shape[1] == info.channels and 32 // tensor.shape[-1] == info.stride, info.name
    if kwargs.get("zero_init_last"):
        assert all(torch.count_nonzero(block.bn2.weight) == 0 for block in model.layer3)
        assert model.layer3[-1].drop_path.drop_prob == pytest.approx(0.2)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_step(model, images):
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    sum(f.square().mean() for f in model(images).values()).backward()
    optimizer.step()


@pytest.mark.parametrize("frozen_stages", [0, 2, 3])
@pytest.mark.parametrize(
    "build", [lambda **kw: create_backbone("resnet20", **kw), tiny_wrn], ids=["r20", "wrn"]
)
def test_frozen_levels_keep_weights_and_statistics_after_train(build, frozen_stages):
    model = build(out_indices=(0, 1, 2, 3), frozen_stages=frozen_stages)
    model.load_state_dict(model.state_dict())  # counts as loaded: freezing it does not warn
    model.eval()
    model.train()
    before = snapshot(model)
    if frozen_stages == 3:  # everything frozen: the forward alone must leave the model as it was
        assert not any(f.requires_grad for f in model(torch.randn(4, 3, 32, 32)).values())
    else:
        train_step(model, torch.randn(4, 3, 32, 32))
    after = snapshot(model)
    for level in range(4):
        modules = model.stage_modules(level)
        prefixes = tuple(f"{n}." for n, m in model.named_modules() if any(m is s for s in modules))
        keys = [k for k in before if k.startswith(prefixes) and not k.endswith("num_batches_tracked")]
        changed = [k for k in keys if not torch.equal(before[k], after[k])]
        if level <= frozen_stages:
            assert changed == [], f"frozen level {level} changed: {changed[:3]}"
        else:
            assert any("running_mean" in k for k in changed), f"level {level} BN statistics did not move"
    if build is tiny_wrn and frozen_stages == 3:  # the final BN-ReLU belongs to the last level
        assert not model.final_norm[0].training
        freeze_stage_norms(model)
        assert isinstance(model.final_norm[0], FrozenBatchNorm2d)
    assert len(summary(model).splitlines()) == 2 + 4 + 1  # header, rule, levels 0..3, total


def test_grad_checkpointing_gives_the_plain_step():
    plain = create_backbone("resnet20", drop_path_rate=0.3)
    checkpointed = create_backbone("resnet20", drop_path_rate=0.3, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(4, 3, 32, 32)
    outputs = []
    for model in (plain, checkpointed):
        torch.manual_seed(0)  # stochastic depth draws the same masks
        features = model.train()(images)
        sum(f.square().mean() for f in features.values()).backward()
        outputs.append([f.detach() for f in features.values()])
    torch.testing.assert_close(outputs[1], outputs[0])
    for (name, ours), theirs in zip(checkpointed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, msg=name)
    for (name, ours), theirs in zip(checkpointed.named_buffers(), plain.buffers()):
        torch.testing.assert_close(ours, theirs, msg=name)


def test_fused_resnet20_gives_the_same_outputs():
    model = create_backbone("resnet20", out_indices=(0, 3))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, actual = model(x), fused(x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4)


def test_resnet20_classifier_trains_on_32px_images():
    from tasks.classification.config import ClassificationModelConfig
    from tasks.classification.model import build_classifier

    model = build_classifier(
        ClassificationModelConfig(backbone=BackboneConfig(arch="resnet20")), num_classes=10
    )
    assert model.backbone.out_indices == (3,) and model.head.fc.in_features == 64
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model.train()(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_heads_that_need_layer4_refuse_a_three_stage_net_naming_the_arch():
    from tasks.detection.config import DetectionModelConfig
    from tasks.detection.model import build_detector
    from tasks.segmentation.config import SegmentationModelConfig
    from tasks.segmentation.model import build_unet

    backbone = BackboneConfig(arch="resnet20")
    expected = r"model.backbone.arch='resnet20': .* has 3 stages \(levels 0..3, no level 4\)"
    with pytest.raises(ConfigError, match=expected):
        build_unet(SegmentationModelConfig(backbone=backbone), load_weights=False)  # encoder_depth 5
    with pytest.raises(ConfigError, match=expected):
        build_detector(DetectionModelConfig(backbone=backbone), 3, load_weights=False)  # levels 1..4


def test_config_frozen_stages_range_follows_the_arch():
    from tasks.common.backbone import validate_backbone

    validate_backbone(BackboneConfig(arch="resnet20", frozen_stages=3))
    with pytest.raises(
        ConfigError, match=r"model.backbone.frozen_stages=4: expected one of \[-1, 0, 1, 2, 3\]"
    ):
        validate_backbone(BackboneConfig(arch="resnet20", frozen_stages=4))
    validate_backbone(BackboneConfig(arch="resnet18", frozen_stages=4))


def test_layer_decay_groups_the_three_stages():
    from tasks.classification.config import ClassificationModelConfig
    from tasks.classification.model import build_classifier
    from tasks.engine.config import TrainConfig
    from tasks.engine.optim import lr_parts

    model = build_classifier(
        ClassificationModelConfig(backbone=BackboneConfig(arch="resnet20")), num_classes=10
    )
    parts = {name: scale for name, scale, _ in lr_parts(model, TrainConfig(layer_decay=0.5))}
    assert parts == {
        "head": 1.0,
        "backbone.stem": 0.5**4,
        "backbone.layer1": 0.5**3,
        "backbone.layer2": 0.5**2,
        "backbone.layer3": 0.5,
    }
