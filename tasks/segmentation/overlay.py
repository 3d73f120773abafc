"""PNG overlays: image | ground truth | prediction, classes in fixed colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Class 0 is drawn transparent; the rest cycle through a colour-blind-friendly palette (Okabe-Ito).
_PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
    ],
    np.uint8,
)


def to_display(image: np.ndarray) -> np.ndarray:
    """A normalised (C, H, W) or (H, W, C) float image as uint8 RGB (H, W, 3), min-max stretched."""
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim == 2:
        image = image[..., None]
    image = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, axis=-1)
    low, high = float(image.min()), float(image.max())
    return ((image - low) / max(high - low, 1e-8) * 255).astype(np.uint8)


def blend(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5, skip_class: int | None = 0) -> np.ndarray:
    """Colour each labelled pixel (except ``skip_class``) over ``rgb``."""
    out = rgb.astype(np.float32).copy()
    for value in np.unique(labels):
        if value == skip_class or value == 255:
            continue
        colour = _PALETTE[(int(value) - 1) % len(_PALETTE)]
        where = labels == value
        out[where] = (1 - alpha) * out[where] + alpha * colour
    return out.astype(np.uint8)


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray | None = None,
    skip_class: int | None = 0,
) -> None:
    """Write ``image | ground truth | prediction`` (or ``image | prediction``) side by side as PNG."""
    rgb = to_display(image)
    panels = [rgb]
    if ground_truth is not None:
        panels.append(blend(rgb, ground_truth, skip_class=skip_class))
    panels.append(blend(rgb, prediction, skip_class=skip_class))
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path)
