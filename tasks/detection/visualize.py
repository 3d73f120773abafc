"""Drawing boxes on images (torchvision.utils.draw_bounding_boxes) and saving them as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

PRED_COLOUR = (255, 64, 64)
GT_COLOUR = (64, 220, 64)


def draw_detections(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    names: Sequence[str],
    *,
    score_thresh: float = 0.3,
    gt_boxes: torch.Tensor | None = None,
    max_boxes: int = 50,
) -> torch.Tensor:
    """Image (float CxHxW in [0, 1] or uint8) with ground truth in green and detections in red.

    Args:
        names: class name per contiguous label (index 0 = background).
        score_thresh: detections below this score are not drawn.
        max_boxes: draw at most this many detections (the highest scores).

    Returns:
        uint8 3xHxW tensor.
    """
    canvas = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
    canvas = canvas.cpu()
    if canvas.shape[0] == 1:
        canvas = canvas.expand(3, -1, -1)
    width = max(1, round(max(canvas.shape[-2:]) / 300))
    if gt_boxes is not None and len(gt_boxes):
        canvas = draw_bounding_boxes(canvas, gt_boxes.cpu().float(), colors=GT_COLOUR, width=width)
    keep = scores >= score_thresh
    order = scores[keep].argsort(descending=True)[:max_boxes]
    boxes, labels, scores = boxes[keep][order].cpu(), labels[keep][order].cpu(), scores[keep][order].cpu()
    if len(boxes):
        text = [
            f"{names[int(label)] if int(label) < len(names) else int(label)} {float(score):.2f}"
            for label, score in zip(labels, scores, strict=True)
        ]
        canvas = draw_bounding_boxes(canvas, boxes.float(), labels=text, colors=PRED_COLOUR, width=width)
    return canvas


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Write a uint8 3xHxW tensor as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
