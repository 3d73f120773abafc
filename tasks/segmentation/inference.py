"""Inference: whole-image or sliding-window logits, and logits -> binary channels / label maps.

smp has no sliding-window inference and MONAI is not a dependency, so the tiling (nnU-Net's scheme:
overlapping tiles, Gaussian importance weights so tile borders count less) is written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tasks.engine.config import ConfigError


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def gaussian_weights(tile: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's importance map: a Gaussian centred on the tile, sigma = tile size / 8, min > 0."""
    axes = [torch.arange(t, dtype=torch.float32) - (t - 1) / 2 for t in tile]
    grids = torch.meshgrid(*axes, indexing="ij")
    weights = torch.exp(-sum((g / (t * sigma_scale)) ** 2 / 2 for g, t in zip(grids, tile)))
    weights = weights / weights.max()
    return weights.clamp_min(weights[weights > 0].min())


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    tile_size: Sequence[int] = (),
    overlap: float = 0.5,
    batch_size: int = 4,
) -> torch.Tensor:
    """Logits for a batch of images (N, C, H, W) at full resolution.

    Args:
        model: the segmentation model (in eval mode); it pads to its stride itself.
        image: input batch.
        tile_size: (h, w) for sliding-window inference; empty (or an image no larger than the tile) runs
            the whole image at once.
        overlap: fraction of the tile shared by neighbouring tiles, in [0, 1).
        batch_size: tiles per forward pass.
    """
    height, width = image.shape[-2:]
    if not tile_size or (height <= tile_size[0] and width <= tile_size[1]):
        return model(image)
    if len(tile_size) != 2 or not 0 <= overlap < 1:
        raise ConfigError(
            f"eval.tile_size must be [h, w] and eval.tile_overlap in [0, 1), got {list(tile_size)}, {overlap}"
        )
    tile_h, tile_w = min(tile_size[0], height), min(tile_size[1], width)
    step_h, step_w = max(1, int(tile_h * (1 - overlap))), max(1, int(tile_w * (1 - overlap)))
    boxes = [
        (y, x) for y in _tile_starts(height, tile_h, step_h) for x in _tile_starts(width, tile_w, step_w)
    ]
    weights = gaussian_weights((tile_h, tile_w)).to(image.device)
    out: torch.Tensor | None = None
    norm = torch.zeros(height, width, device=image.device)
    for n in range(image.shape[0]):
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            tiles = torch.stack([image[n, :, y : y + tile_h, x : x + tile_w] for y, x in chunk])
            logits = model(tiles).float()
            if out is None:
                out = torch.zeros(image.shape[0], logits.shape[1], height, width, device=image.device)
            for (y, x), tile_logits in zip(chunk, logits):
                out[n, :, y : y + tile_h, x : x + tile_w] += tile_logits * weights
                if n == 0:
                    norm[y : y + tile_h, x : x + tile_w] += weights
    return out / norm


def logits_to_channels(
    logits: torch.Tensor, mode: str, num_classes: int, threshold: float = 0.5
) -> torch.Tensor:
    """Boolean channels compared by the metrics: one per class (binary/multiclass) or per region.

    Args:
        logits: (N, K, H, W).
        mode: binary | multiclass | multilabel.
        num_classes: classes of the label map (binary: 2).
        threshold: sigmoid threshold (binary, multilabel).

    Returns:
        bool tensor (N, num_classes, H, W) for binary/multiclass, (N, R, H, W) for multilabel.
    """
    if mode == "multilabel":
        return torch.sigmoid(logits) > threshold
    labels = logits_to_labels(logits, mode, threshold)
    return labels[:, None] == torch.arange(num_classes, device=labels.device)[None, :, None, None]


def logits_to_labels(
    logits: torch.Tensor, mode: str, threshold: float = 0.5, regions: Sequence[Sequence[int]] = ()
) -> torch.Tensor:
    """Label map (N, H, W) long: argmax (multiclass), sigmoid > threshold (binary).

    Multi-label: regions are applied in order and each predicted region writes its smallest class id, so
    nested regions listed outer to inner (whole tumour [1, 2, 3], core [2, 3], enhancing [3]) give back
    the label map (nnU-Net's conversion); 0 where no region is predicted.
    """
    if mode == "multiclass":
        return logits.argmax(1)
    if mode == "binary":
        return (torch.sigmoid(logits[:, 0]) > threshold).long()
    on = torch.sigmoid(logits) > threshold
    labels = torch.zeros(on.shape[0], *on.shape[2:], dtype=torch.long, device=logits.device)
    # Regions are written in order; later (inner) regions overwrite earlier (outer) ones.
    for r, region in enumerate(regions):
        labels[on[:, r]] = min(region)
    return labels


def labels_to_region_targets(
    labels: torch.Tensor, regions: Sequence[Sequence[int]], ignore_index: int = 255
) -> torch.Tensor:
    """Class-index masks (N, H, W) -> float region targets (N, R, H, W); ignore pixels stay ignore_index."""
    targets = torch.stack(
        [torch.isin(labels, torch.tensor(list(r), device=labels.device)) for r in regions], 1
    )
    targets = targets.float()
    ignored = (labels == ignore_index)[:, None].expand_as(targets)
    targets[ignored] = float(ignore_index)
    return targets
