"""COCO evaluation against plain pycocotools, per-class AP, result conversion and bad results files."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.detection.data import CategoryMap
from tasks.detection.metrics import (
    SAME_NUMBERS_ATOL,
    STAT_NAMES,
    CocoEvaluator,
    ResultsError,
    detections_to_coco,
    evaluate_results_file,
    format_per_class_table,
    resolve_backend,
)


def assert_same_numbers(ours, reference) -> None:
    """pycocotools' numbers; faster-coco-eval's C++ means may differ in the last bit (see metrics.py)."""
    np.testing.assert_allclose(ours, reference, rtol=0, atol=SAME_NUMBERS_ATOL)


@pytest.fixture(params=["faster-coco-eval", "pycocotools"])
def backend(request) -> str:
    """Every number is checked against textbook pycocotools with both evaluation libraries."""
    return request.param


@pytest.fixture
def gt(coco_root):
    data = json.loads((coco_root / "annotations.json").read_text())
    data["annotations"][0]["iscrowd"] = 1  # crowd regions must be handled exactly as pycocotools does
    return data


def noisy_detections(gt, seed=0):
    """Jittered copies of the ground truth plus false positives, with random scores."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        for _ in range(2):
            x, y, w, h = np.array(ann["bbox"], float) + rng.normal(0, 3, 4)
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "bbox": [x, y, max(w, 1), max(h, 1)],
                    "score": float(rng.random()),
                }
            )
    for img in gt["images"]:
        results.append({"image_id": img["id"], "category_id": 7, "bbox": [1, 1, 20, 10], "score": 0.9})
    return results


def pycocotools_reference(gt, results, tmp_path, cat_ids=None):
    """The textbook pycocotools run: files on disk, COCO(), loadRes, evaluate, accumulate, summarize."""
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        if cat_ids is not None:
            coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_metrics_identical_to_pycocotools(gt, tmp_path, backend):
    evaluator = CocoEvaluator(gt, backend)
    for seed in range(2):  # the same evaluator (GT indexed once) used for several "epochs"
        results = noisy_detections(gt, seed)
        metrics, per_class = evaluator.evaluate(results)
        reference = pycocotools_reference(gt, results, tmp_path)
        assert list(metrics) == list(STAT_NAMES)
        assert_same_numbers([metrics[k] for k in STAT_NAMES], reference)
        assert 0 < metrics["AP"] < 1
        for row in per_class:  # per-class AP equals COCOeval restricted to that category
            assert row["AP"] == pytest.approx(
                pycocotools_reference(gt, results, tmp_path, [row["category_id"]])[0]
            )
        assert np.mean([r["AP"] for r in per_class]) == pytest.approx(metrics["AP"])
    assert results[0]["bbox"] and "area" not in results[0]  # the caller's list is not modified by loadRes


def test_perfect_and_empty_detections(gt, backend):
    evaluator = CocoEvaluator(gt, backend)
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    metrics, per_class = evaluator.evaluate(perfect)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert [r["name"] for r in per_class] == ["square", "bar"]
    assert "square" in format_per_class_table(per_class) and "100.00" in format_per_class_table(per_class)
    metrics, per_class = evaluator.evaluate([])
    assert metrics["AP"] == 0.0 and all(r["AP"] == 0.0 for r in per_class)


def test_detections_to_coco_maps_labels_back_and_converts_boxes():
    cmap = CategoryMap([{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}])
    outputs = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
            "scores": torch.tensor([0.5]),
            "labels": torch.tensor([2]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    assert detections_to_coco(outputs, [42, 43], cmap) == [
        {"image_id": 42, "category_id": 7, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.5}
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_id": 12345}, r"1 image id\(s\) are not in the ground truth, e\.g\. \[12345\]"),
        ({"category_id": 99}, "category_id 99 is not in the ground truth"),
        ({"bbox": [1, 2, math.nan, 4]}, "bbox must be 4 finite numbers"),
        ({"bbox": [1, 2, 3]}, "bbox must be 4 finite numbers"),
    ],
)
def test_bad_results_are_rejected(gt, tmp_path, coco_root, change, message):
    results = noisy_detections(gt)
    results[3].update(change)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ResultsError, match=message):
        evaluate_results_file(coco_root / "annotations.json", path)


def test_results_file_not_json_or_not_list(tmp_path, coco_root):
    (tmp_path / "r.json").write_text("[{")
    with pytest.raises(ResultsError, match="not valid JSON"):
        evaluate_results_file(coco_root / "annotations.json", tmp_path / "r.json")
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(ResultsError, match="expected a JSON list"):
        evaluate_results_file(coco_root / "annotations.json", tmp_path / "r.json")


def test_no_detections_identical_to_pycocotools(gt, tmp_path, backend):
    """pycocotools cannot load an empty results list; an empty detection file is its own way to say it."""
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "none.json").write_text(json.dumps({**gt, "annotations": []}))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_eval = COCOeval(coco_gt, COCO(str(tmp_path / "none.json")), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    metrics, per_class = CocoEvaluator(gt, backend).evaluate([])
    assert_same_numbers([metrics[k] for k in STAT_NAMES], coco_eval.stats)
    # The synthetic boxes are all small: no ground truth in the medium and large ranges, so -1 there.
    assert metrics["APs"] == 0.0 and metrics["APm"] == metrics["APl"] == metrics["ARl"] == -1.0
    assert [r["AP"] for r in per_class] == [0.0, 0.0]


@pytest.mark.parametrize("with_detections", [False, True])
def test_ground_truth_without_objects_is_minus_one_as_pycocotools(gt, tmp_path, with_detections, backend):
    empty = {**gt, "annotations": []}
    results = noisy_detections(gt)[:5] if with_detections else []
    metrics, per_class = CocoEvaluator(empty, backend).evaluate(results)
    assert set(metrics.values()) == {-1.0} and all(math.isnan(r["AP"]) for r in per_class)
    if with_detections:
        reference = pycocotools_reference(empty, results, tmp_path)
        assert_same_numbers([metrics[k] for k in STAT_NAMES], reference)


def test_many_classes_and_sizes_identical_to_pycocotools(tmp_path, backend):
    """80 classes, boxes of every area range, 100 detections per image: the benchmark's data, smaller."""
    from benchmarks.detection import synthetic_coco

    gt, results = synthetic_coco(30)
    metrics, _ = CocoEvaluator(gt, backend).evaluate(results)
    assert_same_numbers([metrics[k] for k in STAT_NAMES], pycocotools_reference(gt, results, tmp_path))
    assert min(metrics.values()) > 0


def test_faster_library_is_chosen_when_installed_else_pycocotools(monkeypatch):
    from tasks.detection import metrics

    assert resolve_backend("auto") == "faster-coco-eval"  # a dependency: installed by make
    monkeypatch.setattr(metrics, "COCOeval_faster", None)
    assert resolve_backend("auto") == "pycocotools"
    with pytest.raises(ImportError, match="pip install faster-coco-eval"):
        resolve_backend("faster-coco-eval")
