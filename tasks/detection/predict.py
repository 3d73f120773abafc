"""Inference helpers: run a trained detector on image files.

The detector itself comes from `tasks.engine.loading.load_trained_model(checkpoint)` (its category map:
`trained.task.categories()`, in the checkpoint's label order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tasks.common.images import read_image


@torch.no_grad()
def predict_images(
    model: nn.Module, paths: Sequence[Path], device: torch.device | str = "cpu", batch_size: int = 2
) -> list[tuple[torch.Tensor, dict]]:
    """Run the detector on image files; returns (image tensor, output dict on CPU) per file, in order."""
    model.eval().to(device)
    out: list[tuple[torch.Tensor, dict]] = []
    for start in range(0, len(paths), batch_size):
        images = [
            torch.from_numpy(read_image(p)).permute(2, 0, 1).float().div_(255.0)
            for p in paths[start : start + batch_size]
        ]
        outputs = model([img.to(device) for img in images])
        out.extend((img, {k: v.cpu() for k, v in o.items()}) for img, o in zip(images, outputs, strict=True))
    return out
