"""Deployment rows: INT8 vs fp32 on CPU, fp16 vs fp32 on CUDA.

    python -m benchmarks.deploy --quick
    python -m benchmarks.deploy --cls-checkpoint runs/cls/checkpoints/best.pt data.root=DIR   # + agreement

The anchor for the INT8 target is torchvision's ``resnet50()`` run the default way (fp32, NCHW, eager),
with the same weights as ours. Ours is the FX-quantized INT8 model fed channels-last input, which is how
it is meant to be run (the quantized convolutions are NHWC kernels). The agreement rows need a trained
classifier: top-1 agreement of INT8 with fp32 on the run's own images, none of them used to calibrate.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from benchmarks.report import area_parser, row, show, speed_row
from benchmarks.timing import time_rounds
from tasks.deploy.quantize import quantize_dynamic_head, quantize_static, top1_agreement


def _ours_from_torchvision(anchor: torch.nn.Module) -> torch.nn.Module:
    from tasks.classification import ClassificationModelConfig, build_classifier
    from tasks.common.backbone import BackboneConfig

    ours = build_classifier(ClassificationModelConfig(backbone=BackboneConfig(arch="resnet50")), 1000)
    state = {
        (f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in anchor.state_dict().items()
    }
    ours.load_state_dict(state)
    return ours.eval()


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
    calls = {
        "int8": lambda: int8(images_cl),
        "dynamic": lambda: dynamic(images),
        "anchor": lambda: anchor(images),
    }
    with torch.inference_mode():
        times = time_rounds(calls, repeats)
    shape = f"batch {batch}, {size}px"
    return [
        speed_row(
            f"ResNet-50 INT8 static (FX x86) vs torchvision fp32, {shape}",
            batch,
            times,
            ">= 2.5",
            ours="int8",
        ),
        speed_row(
            f"ResNet-50 INT8 dynamic head only vs torchvision fp32, {shape}",
            batch,
            times,
            "cheap option",
            ours="dynamic",
        ),
    ]


def agreement_rows(checkpoint: str | Path, overrides: list[str], quick: bool = False) -> list[dict]:
    """Top-1 agreement and speed-up of INT8 vs fp32 for a trained classifier on its own images."""
    from tasks.deploy.inputs import real_images
    from tasks.deploy.loading import load_classifier

    loaded = load_classifier(checkpoint, overrides, "the INT8 agreement benchmark")
    calib_count = 32 if quick else 64
    train = real_images(loaded.task, 10_000, "train")
    val = real_images(loaded.task, 10_000, "val")
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
    with torch.inference_mode():
        times = time_rounds(
            {"int8": lambda: int8(first_cl), "fp32": lambda: loaded.model(first)}, rounds=3 if quick else 5
        )
    arch = loaded.cfg.model.backbone.arch
    run_name = Path(checkpoint).parent.parent.name
    name = f"{arch} INT8 top-1 agreement with fp32 ({count} {run_name} images, none used to calibrate)"
    return [
        row(name, agree * 100, 100.0, "%", agree, ">= 0.99"),
        speed_row(
            f"{arch} INT8 static vs our fp32 on the same checkpoint, batch {len(first)}",
            len(first),
            times,
            "-",
            ours="int8",
            anchor="fp32",
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

    with torch.inference_mode():
        times = time_rounds({"fp16": fp16, "anchor": fp32}, rounds=10, warmup=3)
    name = f"ResNet-50 fp16 autocast + channels-last vs fp32 (CUDA, batch {batch})"
    return [speed_row(name, batch, times, ">= 2.0", ours="fp16")]


def run(
    quick: bool = False, checkpoint: str | Path | None = None, overrides: list[str] | None = None
) -> list[dict]:
    """All deployment rows; the agreement rows need a trained classification checkpoint."""
    rows = int8_rows(quick)
    if checkpoint:
        rows += agreement_rows(checkpoint, overrides or [], quick)
    return rows + cuda_rows(quick)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.deploy``: print the machine line and the deployment table."""
    parser = area_parser("deploy", __doc__, "batch 4, 3 rounds")
    parser.add_argument("overrides", nargs="*", help="data.* overrides for --cls-checkpoint's saved config")
    parser.add_argument("--cls-checkpoint", help="trained classifier: adds INT8 top-1 agreement rows")
    args = parser.parse_args(argv)
    show("deploy", run(args.quick, args.cls_checkpoint, args.overrides))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
