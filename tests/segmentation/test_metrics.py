"""Metrics against reference formulas on hand-made masks."""

import math

import numpy as np
import pytest

from tasks.segmentation.metrics import (
    CaseMetricAccumulator,
    binary_channel_metrics,
    hd95,
    scores_from_counts,
)


def _brute_force_hd95(pred, gt, spacing=(1.0, 1.0)):
    """Reference: surfaces by 4-neighbour test, all pairwise Euclidean distances, pooled 95th percentile."""

    def border(mask):
        padded = np.pad(mask, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    bp, bg = border(pred), border(gt)
    d = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1))
    return np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)


def test_dice_iou_precision_recall_match_formula():
    gt = np.zeros((6, 6), bool)
    gt[1:4, 1:4] = True  # 9 pixels
    pred = np.zeros((6, 6), bool)
    pred[2:5, 2:5] = True  # 9 pixels, overlap 2x2 = 4
    m = binary_channel_metrics(pred, gt)
    tp, fp, fn = 4, 5, 5
    assert (m["tp"], m["fp"], m["fn"]) == (tp, fp, fn)
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["precision"] == pytest.approx(4 / 9)
    assert m["recall"] == pytest.approx(4 / 9)


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0), (0.5, 2.0)])
def test_hd95_matches_brute_force(spacing):
    rng = np.random.default_rng(3)
    for _ in range(5):
        gt = np.zeros((24, 20), bool)
        pred = np.zeros((24, 20), bool)
        r0, c0 = rng.integers(2, 10, size=2)
        gt[r0 : r0 + 8, c0 : c0 + 6] = True
        pred[r0 + 1 : r0 + 10, c0 - 2 : c0 + 5] = True
        pred[1, 1] = True  # an outlier pixel far from the ground truth
        ref = _brute_force_hd95(pred, gt, spacing or (1.0, 1.0))
        assert hd95(pred, gt, spacing) == pytest.approx(ref)


def test_hd95_shifted_square_is_shift():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True
    pred = np.roll(gt, 3, axis=1)
    assert hd95(pred, gt) == pytest.approx(3.0)
    assert hd95(pred, gt, spacing=(1.0, 0.5)) == pytest.approx(1.5)


def test_empty_ground_truth_rule():
    empty = np.zeros((8, 10), bool)
    some = empty.copy()
    some[2, 3] = True
    both = binary_channel_metrics(empty, empty)
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "precision", "recall", "hd95"))
    both_one = binary_channel_metrics(empty, empty, empty_rule="one")
    assert both_one["dice"] == 1.0 and both_one["hd95"] == 0.0
    fp_only = binary_channel_metrics(some, empty)
    assert fp_only["dice"] == 0.0 and fp_only["precision"] == 0.0 and fp_only["recall"] == 0.0
    # Exactly one empty: HD95 is the image diagonal (BraTS worst case), in the units of the spacing.
    assert fp_only["hd95"] == pytest.approx(math.hypot(8, 10))
    assert hd95(empty, some, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(16, 10))
    with pytest.raises(ValueError, match="empty_rule"):
        scores_from_counts(0, 0, 0, empty_rule="zero")


def test_case_accumulator_sums_counts_and_excludes_empty_cases():
    acc = CaseMetricAccumulator(["bg", "fg"], mean_channels=[1], with_hd95=False)
    gt1 = np.zeros((4, 4), np.int64)
    gt1[:2, :2] = 1
    pred1 = gt1.copy()
    pred1[0, 0] = 0  # tp=3, fn=1
    gt2 = np.zeros((4, 4), np.int64)
    gt2[3, 3] = 1
    pred2 = np.zeros((4, 4), np.int64)  # fn=1
    for i, (p, g) in enumerate([(pred1, gt1), (pred2, gt2)]):
        acc.add(np.stack([p == 0, p == 1]), np.stack([g == 0, g == 1]), case_id="patientA", image_id=str(i))
    empty = np.zeros((4, 4), np.int64)
    acc.add(np.stack([empty == 0, empty == 1]), np.stack([empty == 0, empty == 1]), "patientB", "2")
    rows = {r["case"]: r for r in acc.case_rows()}
    # patient A: volumetric Dice from summed counts tp=3, fp=0, fn=2
    assert rows["patientA"]["dice/fg"] == pytest.approx(6 / 8)
    assert rows["patientA"]["n_images"] == 2
    assert math.isnan(rows["patientB"]["dice/fg"])
    summary = acc.summary()
    assert summary["means"]["dice/fg"] == pytest.approx(6 / 8)  # patient B left out of the mean ...
    assert summary["cases_excluded_empty"]["fg"] == 1  # ... and counted
    assert summary["means"]["dice_mean"] == pytest.approx(6 / 8)
    assert len(summary["per_image"]) == 3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        binary_channel_metrics(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
