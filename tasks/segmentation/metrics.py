"""Overlap and distance metrics for segmentation, per image and per case.

Every metric is computed on one *binary channel* at a time: a class of a label map (multi-class / binary
mode) or a region (multi-label mode).  The counts (TP, FP, FN) of a case are summed over its images, so a
case's Dice is the volumetric Dice of all its pixels (nnU-Net's convention), not the mean of slice Dices.

Empty-ground-truth rule (documented in README.md):

* ground truth and prediction both empty for a channel: the ratio is 0/0.  ``empty_rule="nan"`` (default,
  nnU-Net and MONAI ``ignore_empty=True``) reports NaN and the case is left out of that class's mean; the
  summary counts how many cases were left out.  ``empty_rule="one"`` scores Dice = IoU = precision =
  recall = 1 and HD95 = 0 (a correct "nothing here").
* ground truth empty, prediction not empty: Dice = IoU = precision = 0 (every predicted pixel is a false
  positive); recall, 0/0, is 0.
* prediction empty, ground truth not empty: Dice = IoU = recall = 0; precision, 0/0, is 0.
* HD95 when exactly one of the two is empty is undefined; we report the image diagonal in the same units
  (pixels or mm), the worst-case value used by the BraTS challenge, so means stay finite and such errors
  are penalised instead of silently dropped.

Hausdorff distance: medpy's ``hd95`` definition (symmetric, 95th percentile of the pooled surface distances
of both directions; surfaces are the masks minus their 1-connectivity erosion), with the Euclidean distance
transform of scipy.  scipy's EDT is what medpy itself uses; we do not depend on medpy (unmaintained, numpy
pinning issues), so the ~15 lines are written here and tested against a brute-force reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

EMPTY_RULES = ("nan", "one")
METRIC_NAMES = ("dice", "iou", "precision", "recall", "hd95")


def _check_empty_rule(empty_rule: str) -> None:
    if empty_rule not in EMPTY_RULES:
        raise ValueError(f"empty_rule must be one of {EMPTY_RULES}, got {empty_rule!r}")


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distances from each surface pixel of ``pred`` to the surface of ``gt`` and vice versa (pooled).

    Args:
        pred: boolean mask (2D or 3D); must not be empty.
        gt: boolean mask of the same shape; must not be empty.
        spacing: physical size of a pixel along each axis (e.g. mm); None means 1 (pixel units).

    Returns:
        1D array with the distances of both directions concatenated (medpy's ``hd95`` input).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values, mask has {pred.ndim} dims")
    footprint = ndimage.generate_binary_structure(pred.ndim, 1)
    pred_border = pred ^ ndimage.binary_erosion(pred, structure=footprint, iterations=1)
    gt_border = gt ^ ndimage.binary_erosion(gt, structure=footprint, iterations=1)
    to_gt = ndimage.distance_transform_edt(~gt_border, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=spacing)
    return np.concatenate([to_gt[pred_border], to_pred[gt_border]])


def hd95(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, empty_rule: str = "nan"
) -> float:
    """95th-percentile symmetric Hausdorff distance with the module's empty-mask rule.

    Args:
        pred: boolean prediction mask (2D or 3D).
        gt: boolean ground-truth mask of the same shape.
        spacing: pixel size per axis (mm); None for pixel units.
        empty_rule: "nan" or "one" (what to report when both masks are empty; see the module docstring).

    Returns:
        The distance in pixels (or in the units of ``spacing``).
    """
    _check_empty_rule(empty_rule)
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    pred_any, gt_any = bool(pred.any()), bool(gt.any())
    if not pred_any and not gt_any:
        return math.nan if empty_rule == "nan" else 0.0
    if pred_any != gt_any:
        scale = np.asarray(spacing, dtype=float) if spacing is not None else 1.0
        extent = np.asarray(pred.shape, dtype=float) * scale
        return float(np.sqrt((extent**2).sum()))
    return float(np.percentile(surface_distances(pred, gt, spacing), 95))


@dataclass
class ChannelCounts:
    """Sums over the images of one case for one binary channel."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    hd95_values: list[float] = field(default_factory=list)


def _ratio(num: float, den: float, both_empty: bool, empty_rule: str) -> float:
    if den > 0:
        return float(num / den)
    if both_empty:
        return math.nan if empty_rule == "nan" else 1.0
    return 0.0  # 0/0 with one side non-empty: sklearn's zero_division=0


def scores_from_counts(tp: int, fp: int, fn: int, empty_rule: str = "nan") -> dict[str, float]:
    """Dice, IoU, precision and recall from pixel counts, applying the empty-ground-truth rule.

    Args:
        tp: true-positive pixels. fp: false-positive pixels. fn: false-negative pixels.
        empty_rule: "nan" or "one", used when prediction and ground truth are both empty.

    Returns:
        dict with keys dice, iou, precision, recall.
    """
    _check_empty_rule(empty_rule)
    both_empty = tp + fp + fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty, empty_rule),
        "iou": _ratio(tp, tp + fp + fn, both_empty, empty_rule),
        "precision": _ratio(tp, tp + fp, both_empty, empty_rule),
        "recall": _ratio(tp, tp + fn, both_empty, empty_rule),
    }


def binary_channel_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    empty_rule: str = "nan",
    with_hd95: bool = True,
) -> dict[str, float]:
    """All metrics of one binary channel of one image (or one volume).

    Args:
        pred: boolean prediction mask.
        gt: boolean ground-truth mask of the same shape.
        spacing: pixel size per axis for HD95 (mm); None for pixels.
        empty_rule: see the module docstring.
        with_hd95: skip the (slower) distance computation when False (hd95 is then NaN).

    Returns:
        dict with dice, iou, precision, recall, hd95, tp, fp, fn.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    out = scores_from_counts(tp, fp, fn, empty_rule)
    out["hd95"] = hd95(pred, gt, spacing, empty_rule) if with_hd95 else math.nan
    out.update(tp=tp, fp=fp, fn=fn)
    return out


def label_map_to_channels(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """One boolean channel per class of an integer label map: (C, *spatial)."""
    return np.stack([label_map == c for c in range(num_classes)])


class CaseMetricAccumulator:
    """Collects per-image metrics and sums counts per case; produces rows and class means.

    Args:
        channel_names: one name per binary channel (class names, or region names in multi-label mode).
        empty_rule: see the module docstring.
        mean_channels: indices of the channels averaged into ``dice_mean`` (e.g. all but background).
        with_hd95: compute HD95 (per image; per volume when images are whole volumes).
    """

    def __init__(
        self,
        channel_names: Sequence[str],
        empty_rule: str = "nan",
        mean_channels: Sequence[int] | None = None,
        with_hd95: bool = True,
    ) -> None:
        _check_empty_rule(empty_rule)
        self.channel_names = list(channel_names)
        self.empty_rule = empty_rule
        self.mean_channels = (
            list(range(len(self.channel_names))) if mean_channels is None else list(mean_channels)
        )
        self.with_hd95 = with_hd95
        self.image_rows: list[dict] = []
        self._cases: dict[str, list[ChannelCounts]] = {}
        self._case_images: dict[str, int] = {}

    def add(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        case_id: str,
        image_id: str,
        spacing: Sequence[float] | None = None,
    ) -> dict:
        """Adds one image (or volume) given as boolean channel stacks (K, *spatial); returns its row."""
        if pred.shape != gt.shape or pred.shape[0] != len(self.channel_names):
            raise ValueError(
                f"{image_id}: prediction {pred.shape} / ground truth {gt.shape} do not match "
                f"{len(self.channel_names)} channels"
            )
        counts = self._cases.setdefault(case_id, [ChannelCounts() for _ in self.channel_names])
        self._case_images[case_id] = self._case_images.get(case_id, 0) + 1
        row: dict = {"image": image_id, "case": case_id}
        for k, name in enumerate(self.channel_names):
            m = binary_channel_metrics(pred[k], gt[k], spacing, self.empty_rule, self.with_hd95)
            counts[k].tp += m["tp"]
            counts[k].fp += m["fp"]
            counts[k].fn += m["fn"]
            counts[k].hd95_values.append(m["hd95"])
            for metric in METRIC_NAMES:
                row[f"{metric}/{name}"] = m[metric]
        self.image_rows.append(row)
        return row

    def case_rows(self) -> list[dict]:
        """One row per case: volumetric Dice/IoU/precision/recall from summed counts, mean of image HD95s."""
        rows = []
        for case_id, counts in self._cases.items():
            row: dict = {"case": case_id, "n_images": self._case_images[case_id]}
            for name, c in zip(self.channel_names, counts):
                row.update(
                    {
                        f"{k}/{name}": v
                        for k, v in scores_from_counts(c.tp, c.fp, c.fn, self.empty_rule).items()
                    }
                )
                finite = [v for v in c.hd95_values if not math.isnan(v)]
                row[f"hd95/{name}"] = float(np.mean(finite)) if finite else math.nan
            rows.append(row)
        return rows

    def summary(self) -> dict:
        """Per-class means over cases (NaN cases left out and counted), plus ``dice_mean``."""
        rows = self.case_rows()
        means, excluded = case_means(rows, self.channel_names, self.mean_channels)
        return {
            "means": means,
            "cases_excluded_empty": excluded,
            "per_case": rows,
            "per_image": self.image_rows,
            "empty_rule": self.empty_rule,
        }


def case_means(
    rows: Sequence[dict], channel_names: Sequence[str], mean_channels: Sequence[int]
) -> tuple[dict[str, float], dict[str, int]]:
    """Per-class means of case rows (`CaseMetricAccumulator.case_rows`) and ``dice_mean``.

    NaN entries (empty ground truth and prediction under ``empty_rule="nan"``) are left out of their
    class's mean; ``dice_mean`` averages the Dice means of `mean_channels` that are not NaN. Pooling the
    case rows of every cross-validation fold gives nnU-Net's cross-validation summary.

    Returns:
        (means keyed ``<metric>/<channel>`` plus ``dice_mean``, cases left out of each channel's Dice mean).
    """
    means: dict[str, float] = {}
    excluded: dict[str, int] = {}
    for metric in METRIC_NAMES:
        for name in channel_names:
            key = f"{metric}/{name}"
            values = [r[key] for r in rows if not math.isnan(r[key])]
            means[key] = float(np.mean(values)) if values else math.nan
            if metric == "dice":
                excluded[name] = len(rows) - len(values)
    chosen = [means[f"dice/{channel_names[k]}"] for k in mean_channels]
    chosen = [v for v in chosen if not math.isnan(v)]
    means["dice_mean"] = float(np.mean(chosen)) if chosen else math.nan
    return means, excluded
