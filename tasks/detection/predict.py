"""Inference helpers: rebuild a trained detector from its checkpoint and run it on image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tasks.common.images import IMAGE_SUFFIXES, read_image
from tasks.engine.checkpoint import load_checkpoint
from tasks.engine.config import config_from_dict
from tasks.files import visible_children

from .classes import map_from_meta
from .config import DetectionConfig
from .data import CategoryMap
from .model import build_detector


def load_detector(
    checkpoint: str | Path, *, use_ema: bool = True
) -> tuple[nn.Module, CategoryMap, DetectionConfig]:
    """Rebuild the detector saved by ``tools/train_det.py`` (config and classes come from the checkpoint).

    Args:
        checkpoint: ``checkpoints/best.pt`` or ``last.pt`` of a run.
        use_ema: prefer the EMA weights when the run kept them.

    Returns:
        (model in eval mode on CPU, category map, the run's config).
    """
    ckpt = load_checkpoint(checkpoint)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(
            f"{checkpoint}: not a training checkpoint of tools/train_det.py (needs 'config' and 'model')"
        )
    cfg = config_from_dict(DetectionConfig, ckpt["config"])
    # The classes in label order: from the checkpoint's task meta, or the config of older checkpoints.
    cmap = map_from_meta(ckpt.get("task_meta") or {}, str(checkpoint))
    if cmap is None:
        if not cfg.model.category_ids:
            raise ValueError(f"{checkpoint}: the saved config has no model.category_ids")
        names = cfg.model.class_names or [str(c) for c in cfg.model.category_ids]
        categories = [{"id": c, "name": n} for c, n in zip(cfg.model.category_ids, names, strict=True)]
        cmap = CategoryMap(categories, keep_order=True)
    model = build_detector(cfg.model, cmap.num_classes, load_weights=False)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") else ckpt["model"]
    model.load_state_dict(state)
    return model.eval(), cmap, cfg


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist")
    # visible_children skips macOS `._name.jpg` resource forks and other junk that looks like an image.
    files = [p for p in visible_children(folder) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    return files


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
