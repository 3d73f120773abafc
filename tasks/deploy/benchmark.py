"""Deployment benchmark rows: INT8 vs fp32 on CPU, fp16 on CUDA (rows as in tools/benchmark_*.py).

The anchor for the INT8 target is torchvision's ``resnet50()`` run the default way (fp32, NCHW, eager),
with the same weights as ours. Ours is the FX-quantized INT8 model fed channels-last input, which is how
it is meant to be run (the quantized convolutions are NHWC kernels).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from .quantize import quantize_dynamic_head, quantize_static, top1_agreement
from .timing import median_times


def _ours_from_torchvision(anchor: torch.nn.Module) -> torch.nn.Module:
    from tasks.classification import ClsModelConfig, build_classifier

    ours = build_classifier(ClsModelConfig(arch="resnet50"), 1000)
    state = {
        (f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in anchor.state_dict().items()
    }
    ours.load_state_dict(state)
    return ours.eval()


def _row(name, ours, anchor, unit, target) -> dict:
    return dict(name=name, ours=ours, anchor=anchor, unit=unit, ratio=ours / anchor, target=target)


def int8_rows(quick: bool = False) -> list[dict]:
    """INT8 static and dynamic-head speed of ResNet-50 against torchvision fp32 (same weights)."""
    batch, size, repeats, calib = (4, 224, 3, 1) if quick else (16, 224, 7, 8)
    torch.manual_seed(0)
    anchor = torchvision.models.resnet50().eval()
    ours = _ours_from_torchvision(anchor)
    images = torch.randn(batch, 3, size, size)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    int8 = quantize_static(ours, [torch.randn(batch, 3, size, size) for _ in range(calib)])
    dynamic = quantize_dynamic_head(ours)
    t_int8, t_dyn, t_anchor = median_times(
        [lambda: int8(images_cl), lambda: dynamic(images), lambda: anchor(images)], repeats=repeats
    )
    shape = f"batch {batch}, {size}px"
    return [
        _row(
            f"ResNet-50 INT8 static (FX x86) vs torchvision fp32, {shape}",
            batch / t_int8,
            batch / t_anchor,
            "img/s",
            ">= 2.5",
        ),
        _row(
            f"ResNet-50 INT8 dynamic head only vs torchvision fp32, {shape}",
            batch / t_dyn,
            batch / t_anchor,
            "img/s",
            "cheap option",
        ),
    ]


def agreement_rows(checkpoint: str | Path, overrides: list[str], quick: bool = False) -> list[dict]:
    """Top-1 agreement and speed-up of INT8 vs fp32 for a trained classifier on its own images."""
    from .inputs import real_images
    from .loading import load_model

    loaded = load_model(checkpoint, "classification", None, overrides)
    calib_count = 32 if quick else 64
    train = real_images("classification", loaded.cfg, 10_000, "train")
    val = real_images("classification", loaded.cfg, 10_000, "val")
    if len(train) <= calib_count:
        calib_count = len(train) // 2
    # Agreement needs no labels: every image not used for calibration counts (validation set first).
    held_out = (val + train[calib_count:])[: 1000 if quick else 5000]
    batches = [torch.stack(held_out[i : i + 16]) for i in range(0, len(held_out), 16)]
    calibration = [torch.stack(train[i : i + 16]) for i in range(0, calib_count, 16)]
    int8 = quantize_static(loaded.model, calibration)
    agree, count = top1_agreement(
        loaded.model, lambda x: int8(x.contiguous(memory_format=torch.channels_last)), batches
    )
    first = batches[0]
    first_cl = first.contiguous(memory_format=torch.channels_last)
    t_int8, t_fp32 = median_times(
        [lambda: int8(first_cl), lambda: loaded.model(first)], repeats=3 if quick else 5
    )
    arch = loaded.cfg.model.arch
    run_name = Path(checkpoint).parent.parent.name
    return [
        dict(
            name=f"{arch} INT8 top-1 agreement with fp32 ({count} {run_name} images, none used to calibrate)",
            ours=agree * 100,
            anchor=100.0,
            unit="%",
            ratio=agree,
            target=">= 0.99",
        ),
        _row(
            f"{arch} INT8 static vs our fp32 on the same checkpoint, batch {len(first)}",
            len(first) / t_int8,
            len(first) / t_fp32,
            "img/s",
            "-",
        ),
    ]


def cuda_rows(quick: bool = False) -> list[dict]:
    """fp16 (autocast + channels-last) vs fp32 ResNet-50 inference on the GPU; empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    batch = 32 if quick else 64
    model = torchvision.models.resnet50().eval().cuda()
    fast = torchvision.models.resnet50().eval().cuda().to(memory_format=torch.channels_last)
    fast.load_state_dict(model.state_dict())
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    images_cl = images.contiguous(memory_format=torch.channels_last)

    def fp16():
        with torch.autocast("cuda", dtype=torch.float16):
            fast(images_cl)
        torch.cuda.synchronize()

    def fp32():
        model(images)
        torch.cuda.synchronize()

    t16, t32 = median_times([fp16, fp32], repeats=10, warmup=3)
    return [
        _row(
            f"ResNet-50 fp16 autocast + channels-last vs fp32 (CUDA, batch {batch})",
            batch / t16,
            batch / t32,
            "img/s",
            ">= 2.0",
        )
    ]


def run(
    quick: bool = False, checkpoint: str | Path | None = None, overrides: list[str] | None = None
) -> list[dict]:
    """All deployment rows; the agreement rows need a trained classification checkpoint."""
    rows = int8_rows(quick)
    if checkpoint:
        rows += agreement_rows(checkpoint, overrides or [], quick)
    return rows + cuda_rows(quick)
