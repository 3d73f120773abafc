"""FPN adapter, Faster R-CNN builder, torchvision weight compatibility and the norm policy."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

from backbones import convert_frozen_batchnorm, resnet18, resnet50
from tasks.common.backbone import BackboneConfig
from tasks.detection.config import DetectionModelConfig
from tasks.detection.model import (
    BackboneWithFPN,
    build_detector,
    build_faster_rcnn,
    load_torchvision_detector_weights,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_fpn_reads_widths_and_strides_from_feature_info():
    backbone = resnet18(out_indices=(2, 3, 4))
    fpn = BackboneWithFPN(backbone, out_channels=32, extra_level="pool")
    assert (
        [b[0].in_channels for b in fpn.fpn.inner_blocks] == backbone.feature_info.channels == [128, 256, 512]
    )
    assert fpn.feature_names == ["0", "1", "2", "pool"] and fpn.strides == [8, 16, 32, 64]
    out = fpn(torch.rand(1, 3, 64, 96))
    assert list(out) == fpn.feature_names
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 32, 8, 12),
        (1, 32, 4, 6),
        (1, 32, 2, 3),
        (1, 32, 1, 2),
    ]
    p6p7 = BackboneWithFPN(resnet18(), out_channels=32, extra_level="p6p7")
    assert p6p7.feature_names == ["0", "1", "2", "3", "p6", "p7"] and p6p7.strides[-2:] == [64, 128]
    assert len(p6p7(torch.rand(1, 3, 64, 64))) == 6


def test_fpn_bad_arguments():
    with pytest.raises(ValueError, match="extra_level must be one of"):
        BackboneWithFPN(resnet18(), extra_level="p6")
    with pytest.raises(ValueError, match="feature_info"):
        BackboneWithFPN(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="anchor_sizes has 2 entries but the FPN has 5 levels"):
        build_faster_rcnn(resnet18(), 3, anchor_sizes=[[32], [64]])
    with pytest.raises(ValueError, match="same number of sizes"):
        build_faster_rcnn(resnet18(), 3, anchor_sizes=[[32, 40], [64], [128], [256], [512]])
    with pytest.raises(ValueError, match="num_classes counts the background"):
        build_faster_rcnn(resnet18(), 1)


def test_configurable_levels_anchors_and_heads_train_and_infer():
    model = build_faster_rcnn(
        resnet18(out_indices=(2, 3, 4)),
        3,
        fpn_channels=32,
        extra_level="none",
        anchor_sizes=[[16, 24], [48, 64], [96, 128]],
        aspect_ratios=(1.0,),
        min_size=64,
        max_size=96,
        rpn_post_nms_top_n_train=50,
        box_batch_size_per_image=32,
        box_detections_per_img=7,
        box_score_thresh=0.0,
    )
    assert model.rpn.anchor_generator.num_anchors_per_location() == [2, 2, 2]
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    images = [torch.rand(3, 64, 80), torch.rand(3, 80, 64)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]  # a negative image
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert all(len(o["boxes"]) <= 7 for o in out)


def test_batch_of_only_negative_images_has_finite_loss():
    model = build_faster_rcnn(resnet18(), 3, fpn_channels=32, min_size=64, max_size=96)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 80)], [empty, dict(empty)])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] == 0 and losses["loss_rpn_box_reg"] == 0 and losses["loss_classifier"] > 0


def _randomize_bn(model: nn.Module) -> None:
    # A fresh BN is the identity; random statistics make the comparison meaningful.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)


def test_torchvision_fasterrcnn_resnet50_fpn_state_dict_gives_same_detections():
    # Score threshold 0: random heads score low. Fewer proposals keep the box head cheap.
    sizes = dict(
        min_size=96,
        max_size=128,
        box_score_thresh=0.0,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
    )
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **sizes).eval()
    _randomize_bn(reference)
    ours = build_faster_rcnn(resnet50(), 91, **sizes).eval()
    assert load_torchvision_detector_weights(ours, reference.state_dict()) == []
    images = [torch.rand(3, 90, 120), torch.rand(3, 100, 80)]
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    for e, g in zip(expected, got, strict=True):
        assert len(e["boxes"]) > 20
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(e[key], g[key]), key

    # torchvision's COCO checkpoints use FrozenBatchNorm2d (no num_batches_tracked): they load into a
    # detector whose backbone uses FrozenBatchNorm2d (norm=frozen_bn) and compute the same features.
    coco_like = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    convert_frozen_batchnorm(ours.backbone.body)
    assert load_torchvision_detector_weights(ours, coco_like) == []
    assert isinstance(ours.backbone.body.layer3[2].bn2, FrozenBatchNorm2d)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        for a, b in zip(reference.backbone(x).values(), ours.backbone(x).values(), strict=True):
            # FrozenBatchNorm2d folds the statistics into a scale: equal up to float rounding.
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(a.abs().max()))


def test_torchvision_weights_with_other_class_count(tmp_path):
    source = build_faster_rcnn(resnet18(), 91, fpn_channels=32)
    target = build_faster_rcnn(resnet18(), 3, fpn_channels=32)
    with pytest.raises(ValueError, match=r"shape mismatch for 4 tensor\(s\): roi_heads.box_predictor"):
        load_torchvision_detector_weights(target, source.state_dict())
    skipped = load_torchvision_detector_weights(target, source.state_dict(), skip_mismatched=True)
    assert sorted(skipped) == sorted(
        k for k in target.state_dict() if k.startswith("roi_heads.box_predictor")
    )
    assert torch.equal(
        target.backbone.fpn.inner_blocks[0][0].weight, source.backbone.fpn.inner_blocks[0][0].weight
    )
    with pytest.raises(ValueError, match="do not fit this model: missing"):
        load_torchvision_detector_weights(target, {"backbone.body.conv1.weight": torch.zeros(1)})

    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)
    cfg = DetectionModelConfig(
        backbone=BackboneConfig(arch="resnet18", norm="frozen_bn"),
        fpn_channels=32,
        detector_weights=str(path),
        min_size=[64],
        max_size=96,
    )
    with pytest.warns(UserWarning, match="left at their initialisation"):
        model = build_detector(cfg, 3)
    assert isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)
    with pytest.raises(ValueError, match="detector_weights='missing.pth': file not found"):
        build_detector(
            DetectionModelConfig(backbone=BackboneConfig(arch="resnet18"), detector_weights="missing.pth"), 3
        )


def test_norm_policy():
    small = dict(fpn_channels=32, min_size=[64], max_size=96)

    def detector(**backbone):
        return build_detector(
            DetectionModelConfig(backbone=BackboneConfig(arch="resnet18", **backbone), **small), 3
        )

    with pytest.raises(ValueError, match=r"model.backbone.norm='batch': expected one of"):
        detector(norm="batch")
    bn = detector()
    assert isinstance(bn.backbone.body.bn1, nn.BatchNorm2d) and bn.backbone.body.bn1.weight.requires_grad
    gn = detector(norm="gn", norm_groups=16)
    assert isinstance(gn.backbone.body.bn1, nn.GroupNorm) and gn.backbone.body.bn1.num_groups == 16
    assert any(isinstance(m, nn.GroupNorm) for m in gn.backbone.fpn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    with pytest.raises(ValueError, match="norm_groups=24 must divide every width"):
        detector(norm="gn", norm_groups=24)
    with pytest.warns(UserWarning, match="freezes the random"):
        detector(norm="frozen_bn")
    frozen_random = detector(frozen_stages=1)
    with pytest.warns(UserWarning, match="freezes randomly initialised weights"):
        frozen_random.train()
    assert not frozen_random.backbone.body.layer1[0].conv1.weight.requires_grad
    assert not frozen_random.backbone.body.layer1.training  # frozen stage stays in eval after train()
    norm_eval = detector(norm_eval=True).train()
    assert not norm_eval.backbone.body.layer3[0].bn1.training


def test_readme_example_runs_with_plain_torchvision():
    """The README's "your own torchvision detector" example, executed as written."""
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "FasterRCNN(" in b and "BackboneWithFPN" in b)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the example must not trigger any warning
        exec(compile(example, str(README), "exec"), namespace)
    assert isinstance(namespace["detector"], FasterRCNN)
    assert set(namespace["detections"][0]) == {"boxes", "scores", "labels"}
