"""ResNet-C4 Faster R-CNN: the RPN on layer3, the backbone's own layer4 as the box head (detectron2's
Res5ROIHeads on torchvision's FasterRCNN)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from backbones import ARCHS, resnet18
from backbones.weights import extract_backbone
from tasks.common.backbone import BackboneConfig
from tasks.detection.c4 import Res5BoxHead, ResNetC4Trunk, build_faster_rcnn_c4
from tasks.detection.config import DetectionConfig, DetectionModelConfig
from tasks.detection.model import build_detector
from tasks.engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]
C4_CPU_CONFIG = ROOT / "configs" / "detection" / "faster_rcnn_r18_c4_cpu.yaml"
C4_KEYS = ["model.head=c4", "model.out_indices=[3]", "model.extra_level=none"]
# Few, small RoIs: layer4 runs once per RoI, which is where a C4 step spends its time.
TINY_C4 = [
    "model.roi_output_size=6",
    "model.rpn_post_nms_top_n_train=50",
    "model.rpn_post_nms_top_n_test=10",
    "model.box_batch_size_per_image=16",
]
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def tiny_c4_config(**overrides) -> DetectionModelConfig:
    """A ResNet-18 C4 model section for 64 px images and a handful of small RoIs."""
    backbone = overrides.pop("backbone", BackboneConfig(arch="resnet18"))
    values = dict(
        head="c4",
        out_indices=[3],
        extra_level="none",
        roi_output_size=4,
        min_size=[64],
        max_size=96,
        rpn_post_nms_top_n_train=50,
        rpn_post_nms_top_n_test=10,
        box_batch_size_per_image=16,
    )
    return DetectionModelConfig(backbone=backbone, **{**values, **overrides})


def batch() -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 80, generator=g), torch.rand(3, 80, 64, generator=g)]
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 20.0, 20.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    return images, targets


def randomise_norm_statistics(model: torch.nn.Module) -> None:
    """Running statistics away from (0, 1), so that an eval-mode comparison sees the norms."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_trunk_and_head_reproduce_a_plain_resnet_forward():
    model = build_faster_rcnn_c4(
        resnet18(out_indices=(3,)), 3, roi_output_size=4, roi_sampling_ratio=1, min_size=64, max_size=64
    ).eval()
    reference = resnet18().eval()  # another initialisation, every level returned
    randomise_norm_statistics(reference)
    # The trunk holds a plain ResNet: its state dict loads as it is, strictly, layer4 included.
    model.backbone.body.load_state_dict(reference.state_dict())
    assert model.roi_heads.box_head.layer4 is model.backbone.body.layer4  # the head *is* layer4
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        features = model.backbone(x)
        torch.testing.assert_close(features["0"], expected["layer3"])
        # A box shifted by half a stride-16 cell puts RoIAlign's samples on the cell centres: the RoI is
        # exactly the 4x4 layer3 map, and the head's layer4 + average pool must give the plain forward's.
        box = torch.tensor([[-8.0, -8.0, 56.0, 56.0]])
        roi = model.roi_heads.box_roi_pool(features, [box], [(64, 64)])
        torch.testing.assert_close(roi, features["0"])
        torch.testing.assert_close(model.roi_heads.box_head(roi), expected["layer4"].mean((2, 3)))


def test_every_tensor_is_stored_once_under_the_plain_resnet_keys():
    model = build_detector(tiny_c4_config(), 3)
    named = list(model.named_parameters(remove_duplicate=False))
    assert len(named) == len({id(p) for _, p in named})  # no module registered twice
    parts = (model.backbone.body, model.rpn, model.roi_heads.box_predictor)
    assert {id(p) for _, p in named} == {id(p) for part in parts for p in part.parameters()}
    assert sum(p.numel() for _, p in named) == sum(p.numel() for part in parts for p in part.parameters())
    state = model.state_dict(keep_vars=True)
    assert len({id(v) for v in state.values()}) == len(state)
    body = {k.removeprefix("backbone.body."): v for k, v in state.items() if k.startswith("backbone.body.")}
    assert set(body) == set(resnet18().state_dict())
    assert {k.split(".")[0] for k in state if not k.startswith("backbone.body.")} == {"rpn", "roi_heads"}
    assert all(k.startswith("roi_heads.box_predictor.") for k in state if k.startswith("roi_heads."))
    # A C4 checkpoint hands other tools a complete backbone (layer4 included).
    assert set(extract_backbone(model.state_dict())) == set(resnet18().state_dict())
    assert model.rpn.anchor_generator.num_anchors_per_location() == [15]  # 32..512 x 3 ratios


def test_classifier_weights_reach_the_head_with_the_norm_option(tmp_path):
    classifier = resnet18()
    randomise_norm_statistics(classifier)
    path = tmp_path / "classifier.pt"
    state = {f"backbone.{k}": v for k, v in classifier.state_dict().items()}
    torch.save({"model": {**state, "head.weight": torch.zeros(10, 512)}}, path)
    cfg = tiny_c4_config(backbone=BackboneConfig(arch="resnet18", weights=str(path), norm="frozen_bn"))
    head = build_detector(cfg, 3).roi_heads.box_head.layer4
    torch.testing.assert_close(head[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert isinstance(head[0].bn1, FrozenBatchNorm2d)
    torch.testing.assert_close(head[0].bn1.running_var, classifier.layer4[0].bn1.running_var)


def test_training_step_gives_the_four_finite_losses_and_trains_layer4():
    torch.manual_seed(0)
    model = build_detector(tiny_c4_config(), 3).train()
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for module in (model.backbone.body.layer1, model.roi_heads.box_head.layer4, model.rpn, model.roi_heads):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    model.eval()
    with torch.no_grad():
        (out,) = model([images[0]])
    assert set(out) == {"boxes", "labels", "scores"} and out["boxes"].shape[1] == 4


@pytest.mark.parametrize("frozen_stages", [3, 4])
def test_frozen_stages_4_freezes_the_head_too(frozen_stages):
    cfg = tiny_c4_config(backbone=BackboneConfig(arch="resnet18", frozen_stages=frozen_stages))
    model = build_detector(cfg, 3)
    with pytest.warns(UserWarning, match="freezes randomly initialised weights"):
        model.train()
    layer4 = model.roi_heads.box_head.layer4
    norms = [m for m in layer4.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = {k: v.clone() for k, v in layer4.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(model(*batch()).values()).backward()
    optimizer.step()
    changed = [k for k, v in layer4.state_dict().items() if not torch.equal(v, before[k])]
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    if frozen_stages == 4:
        assert not any(p.requires_grad for p in layer4.parameters())
        assert not any(m.training for m in norms) and changed == []  # weights and BN statistics held
        assert trainable == {"rpn", "roi_heads"}
    else:
        assert all(p.requires_grad for p in layer4.parameters()) and all(m.training for m in norms)
        assert any(k.endswith("conv1.weight") for k in changed) and any("running_mean" in k for k in changed)


def test_grad_checkpointing_recomputes_the_head_with_the_same_step():
    """layer4 on the RoIs runs again in backward: same gradients, BatchNorm statistics moved once."""
    rois = torch.rand(6, 256, 4, 4, requires_grad=True)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        backbone = resnet18(out_indices=(3,), grad_checkpointing=checkpointing)
        head = Res5BoxHead(backbone)
        backbone.train()
        calls: list[int] = []
        # A pre-hook: the recomputation stops early, before layer4 returns.
        backbone.layer4.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        head(rois).square().sum().backward()
        stats = [b.clone() for n, b in backbone.layer4.named_buffers() if "running" in n]
        results.append(([p.grad for p in backbone.layer4.parameters()], stats, len(calls)))
    (grads, stats, calls), (grads_ckpt, stats_ckpt, calls_ckpt) = results
    assert (calls, calls_ckpt) == (1, 2)
    torch.testing.assert_close(grads_ckpt, grads)
    torch.testing.assert_close(stats_ckpt, stats)


def test_norm_eval_holds_the_head_statistics():
    model = build_detector(
        tiny_c4_config(backbone=BackboneConfig(arch="resnet18", norm_eval=True)), 3
    ).train()
    layer4 = model.roi_heads.box_head.layer4
    assert not any(m.training for m in layer4.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_builder_refuses_layouts_that_are_not_c4():
    with pytest.raises(ValueError, match=re.escape("out_indices=(3,)")):
        ResNetC4Trunk(resnet18())
    with pytest.raises(ValueError, match="output_stride=32"):
        ResNetC4Trunk(resnet18(out_indices=(3,), output_stride=16))
    with pytest.raises(ValueError, match="one feature level"):
        build_faster_rcnn_c4(resnet18(out_indices=(3,)), 3, anchor_sizes=((32,), (64,)))
    with pytest.raises(ValueError, match="num_classes counts the background"):
        build_faster_rcnn_c4(resnet18(out_indices=(3,)), 1)


THREE_STAGE = next((a for a, (kw, _) in ARCHS.items() if len(kw.get("layers", (0,) * 4)) != 4), "")
BAD_C4 = [
    (["model.head=c5"], "model.head='c5': expected one of ['fpn', 'c4']"),
    (
        ["model.head=c4"],
        "model.out_indices=[1, 2, 3, 4]: with model.head=c4 the RPN and RoIAlign read layer3",
    ),
    (
        ["model.head=c4", "model.out_indices=[3]"],
        "model.extra_level='pool': with model.head=c4 there is no FPN to extend: set none",
    ),
    ([*C4_KEYS, "model.anchor_sizes=[[32],[64]]"], "model.anchor_sizes=[[32], [64]]: with model.head=c4"),
    ([*C4_KEYS, "model.backbone.output_stride=16"], "model.backbone.output_stride=16: with model.head=c4"),
    ([*C4_KEYS, "model.detector_weights=coco.pth"], "model.detector_weights='coco.pth': with model.head=c4"),
    ([*C4_KEYS, f"model.backbone.arch={THREE_STAGE}"], "use a 4-stage ResNet"),
]


@pytest.mark.parametrize("overrides, message", BAD_C4, ids=[o[-1].split("=")[0] for o, _ in BAD_C4])
def test_bad_c4_config_fails_before_the_run_folder_exists(
    coco_root, tmp_path, train_det_main, capsys, overrides, message
):
    if "arch=" in overrides[-1] and not THREE_STAGE:
        pytest.skip("no ResNet with other than 4 stages in ARCHS")
    run = tmp_path / "run"
    assert train_det_main(run, f"data.root={coco_root}", *overrides) == 2
    assert re.search(re.escape(message), capsys.readouterr().err)
    assert not run.exists()


def test_shipped_c4_configs_build_c4_models():
    for name in ("faster_rcnn_r18_c4_cpu.yaml", "faster_rcnn_r50_c4_coco.yaml"):
        m = load_config(C4_CPU_CONFIG.parent / name, [], DetectionConfig).model
        assert (m.head, m.out_indices, m.extra_level, m.roi_output_size) == ("c4", [3], "none", 14)
    model = build_detector(load_config(C4_CPU_CONFIG, [], DetectionConfig).model, 3)
    assert isinstance(model.backbone, ResNetC4Trunk) and model.roi_heads.box_roi_pool.output_size == (14, 14)


@pytest.mark.slow
def test_train_det_c4_end_to_end(coco_root, tmp_path, tiny_det_argv, capsys):
    """tools/train_det.py on the C4 config: COCO metrics, a checkpoint that reloads to the same
    detections through load_trained_model, predict_det, and a refusal to evaluate it as an FPN model."""
    from tasks.engine.data import build_val_loader
    from tasks.engine.loading import load_trained_model
    from tools import predict_det, train_det

    run = tmp_path / "run"
    argv = tiny_det_argv(coco_root, run, *TINY_C4, "model.box_score_thresh=0.0")
    assert train_det.main([str(C4_CPU_CONFIG), *argv[1:]]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if any(k.endswith("AP50") for k in r)]
    assert evaluated, records
    ap = {k: v for k, v in evaluated[-1].items() if re.search(r"(^|/)AP(50|75)?$", k)}
    assert len(ap) == 3 and all(-1.0 <= v <= 1.0 and math.isfinite(v) for v in ap.values()), ap
    detections = json.loads((run / "val_detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= {3, 7}

    # The reloaded checkpoint evaluates to the very detections the run wrote.
    loaded = load_trained_model(run / "checkpoints" / "last.pt")
    assert isinstance(loaded.model.backbone, ResNetC4Trunk)
    assert loaded.model.roi_heads.box_head.layer4 is loaded.model.backbone.body.layer4
    assert loaded.task.model_signature()["head"] == "c4"
    val = loaded.task.build_eval_dataset()
    loader = build_val_loader(val, loaded.task, loaded.cfg.train, torch.device("cpu"))
    metrics = loaded.task.evaluate(loaded.model, loader, "cpu", tmp_path / "again", epoch=1)
    again = json.loads((tmp_path / "again" / "val_detections.json").read_text())
    assert [(d["image_id"], d["category_id"]) for d in again] == [
        (d["image_id"], d["category_id"]) for d in detections
    ]
    for a, b in zip(again, detections, strict=True):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1.5e-3) and a["score"] == pytest.approx(
            b["score"], abs=1e-5
        )
    logged = next(v for k, v in evaluated[-1].items() if k.endswith("AP50"))
    assert metrics["AP50"] == pytest.approx(logged, abs=1e-6)

    out = tmp_path / "pred"
    args = [
        str(run / "checkpoints/last.pt"),
        str(coco_root / "images"),
        "--out",
        str(out),
        "--score-thresh",
        "0",
    ]
    assert predict_det.main([*args, "--max-drawn", "0"]) == 0
    assert json.loads((out / "results.json").read_text())

    # The run's checkpoint evaluated under the FPN config: refused by name, not by a wall of missing tensors.
    assert train_det.main([*tiny_det_argv(coco_root, run, *TINY_C4), "--eval-only"]) == 2
    assert "head: checkpoint='c4'" in capsys.readouterr().err
