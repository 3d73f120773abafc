"""COCO bbox evaluation, with the ground truth indexed once.

`CocoEvaluator` is built once per validation set (the COCO index is created here, not every epoch) and
scores lists of detections in the COCO results format. pycocotools' COCOeval is the reference: the tests
compare every number with it. faster-coco-eval (a maintained package: pycocotools' algorithm with its
per-image matching and accumulation in C++) gives the same numbers several times faster and is used
whenever it is installed (it is a dependency); pycocotools is the fallback.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

try:
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster
except ImportError:  # an environment without it: pycocotools gives the same numbers, slower
    FasterCOCO = COCOeval_faster = None

from backbones.errors import UserError

from .data import CategoryMap

# Order of COCOeval.stats for iouType="bbox".
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("auto", "faster-coco-eval", "pycocotools")


def resolve_backend(backend: str = "auto") -> str:
    """The COCO evaluation library to use: ``auto`` is faster-coco-eval when installed, else pycocotools."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faster-coco-eval" if COCOeval_faster is not None else "pycocotools"
    if backend == "faster-coco-eval" and COCOeval_faster is None:
        raise ImportError("faster-coco-eval is not installed: pip install faster-coco-eval")
    return backend


# faster-coco-eval averages in C++: a mean over classes or IoU thresholds can differ from numpy's in its
# last bit (1e-16). Agreement to 1e-12 is identical for every reported digit.
SAME_NUMBERS_ATOL = 1e-12


def same_coco_numbers(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two lists of COCO numbers agree to `SAME_NUMBERS_ATOL` (the same to the last printed digit)."""
    return bool(np.allclose(a, b, rtol=0, atol=SAME_NUMBERS_ATOL))


def _quiet(*args, **kwargs) -> None:
    """A print function that prints nothing."""


def library(backend: str) -> tuple[type, type]:
    """The (COCO, COCOeval) classes of a resolved backend."""
    return (COCO, COCOeval) if backend == "pycocotools" else (FasterCOCO, COCOeval_faster)


class ResultsError(UserError):
    """Detections that cannot be scored against the ground truth (unknown image/category, bad box)."""


def coco_from_dict(data: dict, backend: str = "pycocotools") -> COCO:
    """Index a COCO dictionary in memory (pycocotools only offers loading from a file)."""
    gt = library(backend)[0]()
    gt.dataset = {k: data[k] for k in ("images", "annotations", "categories")}
    gt.dataset.setdefault("info", {})
    for ann in gt.dataset["annotations"]:
        if "area" not in ann:  # COCOeval's area ranges need it; COCO files normally carry it
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def detections_to_coco(
    outputs: Sequence[dict], image_ids: Sequence[int], category_map: CategoryMap
) -> list[dict]:
    """torchvision detector outputs (xyxy boxes, contiguous labels) -> COCO results entries.

    Args:
        outputs: one dict per image with ``boxes`` (N x 4 xyxy), ``scores`` and ``labels`` tensors.
        image_ids: the COCO image id of each output.
        category_map: maps labels back to the dataset's category ids.
    """
    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, score, label in zip(xywh, out["scores"].tolist(), out["labels"].tolist(), strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": category_map.to_cat_id(int(label)),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(float(score), 5),
                }
            )
    return results


def validate_results(results: object, gt: COCO, source: str = "results") -> list[dict]:
    """Check that detections refer to known images and categories and have finite boxes and scores."""
    if not isinstance(results, list):
        raise ResultsError(f"{source}: expected a JSON list of detections, got {type(results).__name__}")
    image_ids, cat_ids = set(gt.getImgIds()), set(gt.getCatIds())
    bad_images: set = set()
    for i, det in enumerate(results):
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= det.keys():
            raise ResultsError(f"{source}[{i}]: each detection needs image_id, category_id, bbox and score")
        if det["image_id"] not in image_ids:
            bad_images.add(det["image_id"])
        if det["category_id"] not in cat_ids:
            raise ResultsError(
                f"{source}[{i}]: category_id {det['category_id']!r} is not in the ground truth "
                f"categories {sorted(cat_ids)}"
            )
        values = list(det["bbox"]) + [det["score"]] if isinstance(det["bbox"], list | tuple) else []
        if len(values) != 5 or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ResultsError(
                f"{source}[{i}]: bbox must be 4 finite numbers and score finite, got "
                f"bbox={det['bbox']!r} score={det['score']!r}"
            )
    if bad_images:
        shown = sorted(bad_images, key=str)[:10]
        raise ResultsError(
            f"{source}: {len(bad_images)} image id(s) are not in the ground truth, e.g. {shown}; "
            "were the detections made on a different dataset or split?"
        )
    return results


class CocoEvaluator:
    """Scores detections with COCOeval (bbox): faster-coco-eval's, or pycocotools' (the same numbers).

    Args:
        gt: ground-truth COCO dictionary (already checked); indexed once here.
        backend: ``auto`` (faster-coco-eval when installed), ``faster-coco-eval`` or ``pycocotools``.
    """

    def __init__(self, gt: dict, backend: str = "auto"):
        self.backend = resolve_backend(backend)
        self.coco_gt = coco_from_dict(gt, self.backend)
        self.cat_names = {c["id"]: c["name"] for c in gt["categories"]}

    def _no_detections(self) -> COCO:
        """An empty detection set for COCOeval.

        pycocotools' loadRes cannot load an empty list; scoring an empty set the usual way keeps its
        conventions: AP 0 where there is ground truth, -1 for area ranges and classes without any.
        """
        coco_dt = library(self.backend)[0]()
        coco_dt.dataset = {
            "images": list(self.coco_gt.dataset["images"]),
            "categories": list(self.coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt

    def evaluate(
        self, results: list[dict], *, source: str = "results"
    ) -> tuple[dict[str, float], list[dict]]:
        """Run COCOeval on detections in the COCO results format.

        Returns:
            (metrics: the 12 COCO numbers named as in `STAT_NAMES`, per-class rows with AP and AP50).
        """
        validate_results(results, self.coco_gt, source)
        with contextlib.redirect_stdout(io.StringIO()):
            # loadRes adds keys to the entries: work on copies.
            coco_dt = self.coco_gt.loadRes([dict(r) for r in results]) if results else self._no_detections()
            # faster-coco-eval reports through logging, not stdout: the task logs its own summary.
            quiet = {"print_function": _quiet} if self.backend == "faster-coco-eval" else {}
            coco_eval = library(self.backend)[1](self.coco_gt, coco_dt, iouType="bbox", **quiet)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        metrics = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats, strict=True)}
        return metrics, per_class_ap(coco_eval, self.cat_names)


def per_class_ap(coco_eval: COCOeval, cat_names: dict[int, str]) -> list[dict]:
    """AP (IoU .50:.95) and AP50 per category from an accumulated COCOeval (area all, 100 detections).

    Categories without ground truth get NaN (pycocotools marks them -1), matching COCOeval's own mean.
    """
    precision = coco_eval.eval["precision"]  # [iou, recall, category, area, max_dets]
    rows = []
    for k, cat_id in enumerate(coco_eval.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        ap = float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else float("nan")
        ap50 = float(np.mean(p_50[p_50 > -1])) if (p_50 > -1).any() else float("nan")
        rows.append(
            {"category_id": cat_id, "name": cat_names.get(cat_id, str(cat_id)), "AP": ap, "AP50": ap50}
        )
    return rows


def format_per_class_table(rows: list[dict]) -> str:
    """Plain-text table of per-class AP for logs and reports."""
    width = max([len("class")] + [len(r["name"]) for r in rows])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {100 * r['AP']:6.2f}  {100 * r['AP50']:6.2f}")
    return "\n".join(lines)


def evaluate_results_file(
    gt_file: str | Path, results_file: str | Path
) -> tuple[dict[str, float], list[dict]]:
    """Score a COCO results JSON file against a COCO ground-truth file."""
    from .data_check import load_coco_json

    gt = load_coco_json(gt_file)
    try:
        with open(results_file, encoding="utf-8") as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{str(results_file)!r} is not valid JSON (line {e.lineno}: {e.msg})") from e
    return CocoEvaluator(gt).evaluate(results, source=str(results_file))
