"""Folder-of-images prediction: load a run's model, predict each image, write PNG masks and overlays."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tasks.common.files import visible_children
from tasks.common.images import IMAGE_SUFFIXES
from tasks.common.tta import check_tta
from tasks.engine.ensemble import inference_ensemble, load_trained_models

from .classes import meta_value_map
from .config import SegmentationConfig
from .data import NIFTI_ENDINGS, resolve_spec
from .image_io import SegmentationDataError, read_image_and_max
from .inference import logits_to_labels, predict_logits
from .nifti import load_volume, save_like, stack_slices, take_slice
from .overlay import save_overlay
from .transforms import normalize


def _predict_labels(
    model: torch.nn.Module, cfg: SegmentationConfig, image: np.ndarray, tiles, device: str
) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    with torch.no_grad():
        logits = predict_logits(model, x, tiles, cfg.eval.tile_overlap)
    return logits_to_labels(logits, cfg.model.mode, cfg.eval.threshold, cfg.model.regions)[0].cpu().numpy()


def read_input(path: str | Path, cfg: SegmentationConfig) -> np.ndarray:
    """The normalised (H, W, in_chans) float32 array the model sees for a 2D image file, as in training."""
    image, max_value = read_image_and_max(path, cfg.model.backbone.in_chans)
    return normalize(image, cfg.data.normalization, max_value, cfg.data.ct_window)


def _class_to_value_lut(cfg: SegmentationConfig, meta: dict | None = None) -> np.ndarray:
    """class index -> raw mask value of the training data (smallest raw value when several map to a class).

    The value map comes from the checkpoint's meta when it has one (the training data need not exist any
    more), else from the run's config or manifest.
    """
    d = cfg.data
    class_to_value = {c: c for c in range(cfg.model.num_classes)}
    recorded = meta_value_map(meta or {})
    if recorded:
        class_to_value = {c: v for v, c in sorted(recorded.items(), reverse=True)}
    elif d.value_map:
        class_to_value = {c: v for v, c in sorted(d.value_map.items(), reverse=True)}
    elif d.manifest and d.root:
        try:
            spec = resolve_spec(d, cfg.model.num_classes)
            class_to_value = {c: v for v, c in sorted(spec.lookup().items(), reverse=True)}
        except SegmentationDataError as err:  # the training data may be gone: class indices will do
            warnings.warn(f"{err}; writing class indices instead of the manifest's mask values", stacklevel=2)
    return np.array([class_to_value.get(c, c) for c in range(max(cfg.model.num_classes, 256))], np.int64)


def predict_folder(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    tile_size: Sequence[int] | None = None,
    overlays: bool = True,
    device: str = "cpu",
    tta: Sequence[str] | None = None,
) -> list[Path]:
    """Predict every image (or NIfTI volume) of ``input_dir`` and write label masks to ``output_dir``.

    2D images give ``<stem>.png`` (plus ``overlays/<stem>.png``); single-channel NIfTI volumes are
    predicted slice by slice along ``data.nifti_axis`` and written as ``<stem>.nii.gz`` with the input's
    affine and header.  Mask values are the raw values of the training value map (e.g. 0/255 for a binary
    0/255 dataset), so predictions look like the training masks; without a value map they are class indices.

    The U-Net is rebuilt from the checkpoint alone (EMA weights when the run kept them; no backbone weights
    are read or downloaded: the checkpoint holds the trained ones). Given the output folder of
    tools/train_cv.py, every fold's best.pt runs and their probabilities are averaged
    (`tasks.engine.ensemble`).

    ``tta`` (test-time augmentation transforms, `tasks.common.tta.TTA_TRANSFORMS`) replaces the run's
    ``eval.tta`` when given; each tile is then predicted in every view and the probabilities averaged.

    Returns:
        The written mask paths.
    """
    members = load_trained_models(checkpoint)
    trained = members[0]
    cfg, meta = trained.cfg, trained.meta
    if tta is not None:
        check_tta("tta", tta)
        cfg.eval.tta = list(tta)
    activation = "softmax" if cfg.model.mode == "multiclass" else "sigmoid"
    model = trained.task.tta_model(inference_ensemble(members, device, activation))
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    endings = (*IMAGE_SUFFIXES, *NIFTI_ENDINGS)
    # visible_children skips junk such as macOS `._name.png` resource forks, which end like images.
    children = visible_children(input_dir) if input_dir.is_dir() else []
    files = [p for p in children if p.name.lower().endswith(endings) and p.is_file()]
    if not files:
        raise SegmentationDataError(f"{input_dir}: no images ending in {list(endings)}")
    d = cfg.data
    lut = _class_to_value_lut(cfg, meta)
    dtype = np.uint16 if lut.max() > 255 else np.uint8
    tiles = cfg.eval.tile_size if tile_size is None else tile_size
    written = []
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.name.lower().endswith(NIFTI_ENDINGS):
            if cfg.model.backbone.in_chans != 1:
                raise SegmentationDataError(f"{path}: NIfTI prediction supports single-channel models only")
            volume = normalize(
                load_volume(path)[0].astype(np.float32)[..., None], d.normalization, 1.0, d.ct_window
            )
            slices = [
                _predict_labels(
                    model, cfg, take_slice(volume[..., 0], d.nifti_axis, k)[..., None], tiles, device
                )
                for k in range(volume.shape[d.nifti_axis])
            ]
            stem = path.name[: -len(next(e for e in NIFTI_ENDINGS if path.name.lower().endswith(e)))]
            out = output_dir / f"{stem}.nii.gz"
            save_like(lut[stack_slices(slices, d.nifti_axis)], path, out)
            written.append(out)
            continue
        image = read_input(path, cfg)
        labels = _predict_labels(model, cfg, image, tiles, device)
        out = output_dir / f"{path.stem}.png"
        Image.fromarray(lut[labels].astype(dtype)).save(out)
        written.append(out)
        if overlays:
            save_overlay(output_dir / "overlays" / f"{path.stem}.png", image, labels)
    return written
