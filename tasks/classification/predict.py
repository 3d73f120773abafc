"""Inference helpers: class probabilities of a trained classifier on image files.

The classifier comes from `tasks.engine.loading.load_trained_model(checkpoint)` (its class names:
`trained.task.classes`, in the head's order). Images are read by the shared reader and preprocessed with
the run's evaluation transform (resize, centre crop, normalisation), as validation saw them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from tasks.common.images import read_pil
from tasks.common.tta import with_tta


@torch.no_grad()
def predict_images(
    model: nn.Module,
    paths: Sequence[Path],
    transform: Callable,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    tta: Sequence[str] = (),
) -> torch.Tensor:
    """Softmax probabilities, shape (len(paths), classes), of the image files in order (on CPU).

    Args:
        tta: test-time augmentation transforms (`tasks.common.tta.TTA_TRANSFORMS`): the probabilities are
            then the mean over their views (the run's own: ``trained.cfg.eval.tta``).
    """
    model = with_tta(model.eval().to(device), tta, "softmax", dense=False)
    batches = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([transform(read_pil(p)) for p in paths[start : start + batch_size]])
        batches.append(model(images.to(device)).float().softmax(dim=1).cpu())
    return torch.cat(batches)


def write_predictions(
    path: str | Path, images: Sequence[Path], probs: torch.Tensor, classes: Sequence[str], top_k: int = 5
) -> None:
    """A CSV of one row per image: file, predicted class and score, then the top-k classes and scores."""
    k = min(top_k, len(classes))
    scores, indices = probs.topk(k, dim=1)
    header = ["image", "class", "score"] + [
        f"{kind}{i}" for i in range(1, k + 1) for kind in ("class", "score")
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for image, row_scores, row_indices in zip(images, scores.tolist(), indices.tolist(), strict=True):
            ranked = [item for i, s in zip(row_indices, row_scores) for item in (classes[i], f"{s:.6f}")]
            writer.writerow([image.name, *ranked[:2], *ranked])
