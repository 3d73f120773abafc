"""Detection TTA: boxes of every view mapped back, test sizes, the NMS merge, eval.tta through the tools."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from tasks.common.tta import tta_views
from tasks.detection.task import DetectionTask
from tasks.detection.tta import DetectionTTA, at_min_size, merge_detections, with_detection_tta
from tasks.engine.config import ConfigError

ALL = ["hflip", "vflip", "rotate90"]


class BrightBoxDetector(nn.Module):
    """Finds the box of the bright pixels of each image: a detector that every view leaves unchanged.

    It resizes nothing itself but runs torchvision's transform, to record the size each image would be
    detected at.
    """

    def __init__(self, min_size: int = 64, max_size: int = 96) -> None:
        super().__init__()
        self.transform = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3)
        self.seen_sizes: list[tuple[int, int]] = []

    def forward(self, images):
        self.seen_sizes.extend(self.transform(images)[0].image_sizes)
        outputs = []
        for image in images:
            rows, cols = torch.nonzero(image[0] > 0.5, as_tuple=True)
            box = torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]).float()
            outputs.append({"boxes": box[None], "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
        return outputs


class FixedBoxDetector(BrightBoxDetector):
    """Returns the same boxes whatever the image: where they land after mapping back is known by hand."""

    def forward(self, images):
        boxes = torch.tensor([[10.0, 5.0, 30.0, 15.0]])
        return [{"boxes": boxes, "scores": torch.tensor([0.8]), "labels": torch.tensor([2])} for _ in images]


def _image(height: int = 40, width: int = 60) -> torch.Tensor:
    image = torch.zeros(3, height, width)
    image[:, 4:13, 7:31] = 1.0
    return image


def test_every_view_and_size_finds_the_same_box_once():
    detector = BrightBoxDetector()
    tta = DetectionTTA(detector, tta_views(ALL), min_sizes=[48, 64, 80], iou_threshold=0.5)
    (out,) = tta([_image()])
    assert out["boxes"].tolist() == [[7.0, 4.0, 31.0, 13.0]]  # 24 views agree; NMS keeps one
    assert out["scores"].tolist() == pytest.approx([0.9]) and out["labels"].tolist() == [1]
    # 40 x 60 at the short sides 48, 64, 80 (max_size 96 scaled alike): upright and turned views.
    assert set(detector.seen_sizes) == {(48, 72), (72, 48), (64, 96), (96, 64), (80, 120), (120, 80)}
    assert detector.transform.min_size == (64,) and detector.transform.max_size == 96  # restored


def test_boxes_of_the_flipped_image_map_back():
    tta = DetectionTTA(FixedBoxDetector(), tta_views(["hflip"]))
    (out,) = tta([_image(height=40, width=60)])
    # [10, 5, 30, 15] seen on the mirrored 60 px wide image lies at x in [60 - 30, 60 - 10] on the original.
    assert sorted(out["boxes"].tolist()) == [[10.0, 5.0, 30.0, 15.0], [30.0, 5.0, 50.0, 15.0]]
    (out,) = DetectionTTA(FixedBoxDetector(), tta_views(["vflip"]))([_image(height=40, width=60)])
    assert sorted(out["boxes"].tolist()) == [[10.0, 5.0, 30.0, 15.0], [10.0, 25.0, 30.0, 35.0]]


def test_merge_removes_duplicates_per_class():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    near = torch.tensor([[1.0, 0.0, 11.0, 10.0]])  # IoU 0.82 with box
    views = [
        {"boxes": box, "scores": torch.tensor([0.6]), "labels": torch.tensor([1])},
        {"boxes": near, "scores": torch.tensor([0.7]), "labels": torch.tensor([1])},
        {"boxes": near, "scores": torch.tensor([0.4]), "labels": torch.tensor([2])},  # another class
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    merged = merge_detections(views, iou_threshold=0.5, max_detections=100)
    assert merged["boxes"].tolist() == [near[0].tolist(), near[0].tolist()]
    assert merged["scores"].tolist() == pytest.approx([0.7, 0.4]) and merged["labels"].tolist() == [1, 2]
    assert merge_detections(views, iou_threshold=0.9, max_detections=100)["labels"].tolist() == [1, 1, 2]
    assert merge_detections(views, iou_threshold=0.5, max_detections=1)["scores"].tolist() == pytest.approx(
        [0.7]
    )


def test_at_min_size_restores_the_detector():
    detector = BrightBoxDetector(min_size=64, max_size=100)
    with pytest.raises(RuntimeError), at_min_size(detector, 32):
        assert detector.transform.min_size == (32,) and detector.transform.max_size == 50
        raise RuntimeError
    assert detector.transform.min_size == (64,) and detector.transform.max_size == 100


@pytest.fixture
def tiny_task(coco_root, tmp_path, tiny_det_config):
    def make(*overrides: str) -> DetectionTask:
        return DetectionTask(tiny_det_config(tmp_path / "run", f"data.root={coco_root}", *overrides))

    return make


def test_faster_rcnn_one_view_at_its_size_is_the_plain_detector(tiny_task):
    task = tiny_task("eval.tta_min_sizes=[64]")  # the test size: one view, one pass, then NMS again
    model = task.build_model(pretrained=False).eval()
    images = [torch.rand(3, 64, 96), torch.rand(3, 80, 64)]
    with torch.no_grad():
        plain, tta = model(images), task.tta_model(model)(images)
        flipped = tiny_task("eval.tta=[hflip]", "eval.tta_min_sizes=[48,64]").tta_model(model)(images)
    assert isinstance(task.tta_model(model), DetectionTTA)
    for a, b in zip(plain, tta, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "scores", "labels"))
    for out, image in zip(flipped, images, strict=True):
        assert len(out["boxes"]) <= task.cfg.model.box_detections_per_img
        assert ((0 <= out["scores"]) & (out["scores"] <= 1)).all()
        assert (out["boxes"][:, 2] <= image.shape[-1] + 1e-4).all() and (out["boxes"] >= 0).all()


def test_no_tta_is_the_model_itself(tiny_task):
    task = tiny_task()
    model = nn.Identity()
    assert task.tta_model(model) is model
    assert with_detection_tta(model, task.cfg.eval, task.cfg.model) is model


def test_bad_values_name_the_key(tiny_task, coco_root, tmp_path, tiny_det_argv, capsys):
    with pytest.raises(ConfigError, match=r"eval\.tta=\['turn'\]: unknown transform 'turn'"):
        tiny_task("eval.tta=[turn]")
    with pytest.raises(ConfigError, match=r"eval\.tta_min_sizes=\[64, 0\]: every value must be > 0"):
        tiny_task("eval.tta_min_sizes=[64,0]")
    train_det = importlib.import_module("tools.train_det")
    assert train_det.main([*tiny_det_argv(coco_root, tmp_path / "r", "eval.tta=hflip"), "--eval-only"]) == 2
    assert "eval.tta: expected a list" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_only_and_predict_with_tta(coco_root, tmp_path, tiny_det_argv, capsys):
    run = tmp_path / "run"
    train_det = importlib.import_module("tools.train_det")
    predict_det = importlib.import_module("tools.predict_det")
    assert train_det.main(tiny_det_argv(coco_root, run, "train.max_steps_per_epoch=1")) == 0
    tta = ["eval.tta=[hflip]", "eval.tta_min_sizes=[56,64]"]
    assert train_det.main([*tiny_det_argv(coco_root, run, *tta), "--eval-only"]) == 0
    metrics = json.loads((run / "eval.json").read_text())
    assert 0 <= metrics["AP50"] <= 1 and metrics["loss"] > 0
    assert all(0 <= d["score"] <= 1 for d in json.loads((run / "val_detections.json").read_text()))

    ckpt, images = str(run / "checkpoints" / "last.pt"), tmp_path / "photos"
    images.mkdir()
    for name in ("img_0.png", "img_1.png"):
        shutil.copy(coco_root / "images" / name, images / name)

    def predict(*flags: str) -> list[dict]:
        out = tmp_path / "pred"
        assert predict_det.main([ckpt, str(images), "--out", str(out), "--max-drawn", "0", *flags]) == 0
        return json.loads((out / "results.json").read_text())

    plain = predict()
    assert predict("--tta-min-sizes", "64") == plain  # the test size alone: the plain detections
    flipped = predict("--tta", "hflip", "--tta-min-sizes", "56", "64")
    assert flipped != plain and all(0 <= d["score"] <= 1 for d in flipped)
    assert predict_det.main([ckpt, str(images), "--tta", "none", "hflip"]) == 2
    assert "--tta" in capsys.readouterr().err
