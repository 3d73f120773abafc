"""Test-time augmentation for torchvision detectors: flipped / turned views and several test sizes.

The views are those of `tasks.common.tta` (eval.tta); eval.tta_min_sizes adds scales, the short side the
detector's own transform resizes each image to. Every view's boxes are mapped back onto the original
image and all of them are merged by per-class NMS (``torchvision.ops.batched_nms`` at the detector's
model.box_nms_thresh, then its model.box_detections_per_img best), as mmdet's ``DetTTAModel`` merges
Faster R-CNN's views. NMS keeps each box as one view detected it, with its score in [0, 1]; weighted box
fusion (which averages overlapping boxes) is not in torchvision and would add the ensemble-boxes package.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from tasks.common.tta import View, tta_views


@contextmanager
def at_min_size(detector: nn.Module, min_size: int | None) -> Iterator[None]:
    """`detector` (a torchvision GeneralizedRCNN) resizing images to the short side `min_size` meanwhile.

    Its long-side cap (max_size) scales by the same factor, so that every image is resized by
    min_size / test size whatever its shape (mmdet's multi-scale TTA scales both sides alike too).
    None leaves the detector's own test size.
    """
    transform = detector.transform
    saved = transform.min_size, transform.max_size
    if min_size is not None:
        test_size = transform.min_size[-1]  # what torchvision resizes to in eval mode
        transform.min_size = (int(min_size),)
        transform.max_size = round(transform.max_size * min_size / test_size)
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


def merge_detections(outputs: Sequence[dict], iou_threshold: float, max_detections: int) -> dict[str, Tensor]:
    """One image's detections in several views (boxes already on the original image), merged by NMS.

    Returns:
        ``boxes``, ``scores`` and ``labels`` of at most `max_detections` boxes, best score first; a box
        survives unless a better-scored box of its class overlaps it by more than `iou_threshold`.
    """
    boxes, scores, labels = (
        torch.cat([out[key] for out in outputs]) for key in ("boxes", "scores", "labels")
    )
    keep = batched_nms(boxes.float(), scores.float(), labels, iou_threshold)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


class DetectionTTA(nn.Module):
    """A torchvision detector run on every view at every test size; its boxes mapped back and merged.

    Takes and returns what the detector does in eval mode: a list of (C, H, W) images, a list of dicts
    with ``boxes`` (xyxy on the original image), ``scores`` and ``labels``.

    Args:
        detector: a torchvision GeneralizedRCNN (Faster R-CNN) in eval mode.
        views: from `tasks.common.tta.tta_views`.
        min_sizes: short sides to detect at; empty: the detector's own test size.
        iou_threshold: IoU above which `merge_detections` drops the lower-scored box of a class.
        detections_per_img: boxes kept per image after merging.
    """

    def __init__(
        self,
        detector: nn.Module,
        views: Sequence[View],
        min_sizes: Sequence[int] = (),
        iou_threshold: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        if not views:
            raise ValueError("DetectionTTA needs at least one view")
        self.detector = detector
        self.views = list(views)
        self.min_sizes = [int(s) for s in min_sizes]
        self.iou_threshold = iou_threshold
        self.detections_per_img = detections_per_img

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        found: list[list[dict]] = [[] for _ in images]
        for min_size in self.min_sizes or [None]:
            with at_min_size(self.detector, min_size):
                for view in self.views:
                    outputs = self.detector([view.apply(image) for image in images])
                    for per_image, image, out in zip(found, images, outputs, strict=True):
                        height, width = image.shape[-2:]
                        per_image.append({**out, "boxes": view.invert_boxes(out["boxes"], height, width)})
        return [merge_detections(views, self.iou_threshold, self.detections_per_img) for views in found]


def with_detection_tta(detector: nn.Module, eval_cfg, model_cfg) -> nn.Module:
    """`detector` wrapped for the ``eval`` section's TTA (`detector` itself when it asks for none).

    Args:
        eval_cfg: DetectionEvalConfig (tta, tta_min_sizes).
        model_cfg: DetectionModelConfig: its box_nms_thresh and box_detections_per_img merge the views.
    """
    views = tta_views(eval_cfg.tta)
    if len(views) == 1 and not eval_cfg.tta_min_sizes:
        return detector
    return DetectionTTA(
        detector, views, eval_cfg.tta_min_sizes, model_cfg.box_nms_thresh, model_cfg.box_detections_per_img
    )
