"""Our U-Net (resnet34 backbone + smp decoder) against smp.Unet("resnet34") in one process.

    python -m benchmarks.segmentation            # 512x512, batch 4
    python -m benchmarks.segmentation --quick    # 128x128, batch 2: smoke checks, their targets are the
                                                 # full-size ones and are not judged at this size

Rows: training step (forward + loss + backward + AdamW step) and inference images/s: our default path
(fp32 with channels-last weights, what train_seg runs by default) and ours in smp's NCHW format against
smp's fp32 default, then our fast path (bf16 autocast + channels-last) against smp's fp32 default, and
against smp given the same bf16 autocast and channels-last. Ours trains with the engine's fused AdamW
step (`tasks.engine.optim.can_fuse`), smp with torch's default AdamW, as a user's loop would. Two
rows compare our U-Net with gradient checkpointing in its encoder against the plain one: the activations
kept from forward to backward and the training step.
Measurements of ours and the anchor alternate round by round so that load from other processes hits both
alike; the ratio is the median of the per-round ratios. Control rows time smp against a second copy of
itself: their distance from 1.00x is the machine's noise. ``--clock cpu`` times with the process CPU
clock instead of the wall clock: on a machine shared with other jobs it measures the work done rather
than the waiting (use it with ``--threads 1``, where no OpenMP thread spins at a barrier while its
partner is descheduled).
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

from backbones import create_backbone, prepare_for_inference
from benchmarks.backbone import saved_activation_bytes
from benchmarks.peak import TRAIN_FLOPS_FACTOR, forward_flops
from benchmarks.report import (
    area_parser,
    bf16_target,
    measure_bf16,
    report_target,
    row,
    show,
    speed_row,
    untimed_bf16_row,
)
from benchmarks.timing import time_rounds
from tasks.segmentation.model import UNet
from tasks.segmentation.smp_parts import smp_unet

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _ours() -> UNet:
    return UNet(create_backbone("resnet34", out_indices=(0, 1, 2, 3, 4)), 1)


def _models():
    return _ours(), smp_unet("resnet34", classes=1)


def _step_fn(model, x, target, train: bool, bf16: bool, channels_last: bool, fused: bool = False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused) if train else None
    model.train(train)

    def step():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        if train:
            with ctx:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode(), ctx:
                model(x)

    return step


def _smp_against_smp(x, target, train: bool, fast: bool, rounds: int, clock):
    """A copy of smp's U-Net (bf16 + channels-last when ``fast``) timed against smp's fp32 default."""
    _, anchor = _models()
    _, other = _models()
    other.load_state_dict(anchor.state_dict())
    steps = {
        "ours": _step_fn(other, x, target, train, fast, fast),
        "anchor": _step_fn(anchor, x, target, train, False, False),
    }
    return time_rounds(steps, rounds, clock=clock)


def _quick_smoke(target, quick: bool):
    """In --quick runs a speed row is a smoke check: 128 px convolutions are too small for the layout and
    bf16 gains of 512 px to show (1.2x there against 3.7x at full size), so a quick miss would not mean a
    real one. The full-size target is shown, not judged."""
    return f"smoke (full size: {report_target(target)})" if quick else target


def same_tricks_rows(x, target, rounds: int, clock, quick: bool) -> list[dict]:
    """Ours against smp run under the same bf16 autocast and channels-last: what is left of our lead when
    a user gives smp the same two tricks (training uses our engine's fused AdamW step)."""
    shape = f"({x.shape[0]}x3x{x.shape[2]}x{x.shape[3]})"
    rows = []
    for kind, train in (("train step", True), ("inference, predict path (BN folded),", False)):
        name = f"{kind} ours vs smp, both bf16+channels_last {shape}"
        if not measure_bf16():
            rows.append(untimed_bf16_row(name, "images/s"))
            continue
        ours, anchor = _models()
        if not train:  # what tools/predict_seg.py runs (TrainedModel.inference_model)
            ours = prepare_for_inference(ours)
        steps = {
            "ours": _step_fn(ours, x, target, train, True, True, fused=True),
            "anchor": _step_fn(anchor, x, target, train, True, True),
        }
        target_text = _quick_smoke(bf16_target(1.3), quick)
        timing = time_rounds(steps, rounds, clock=clock)
        rows.append(speed_row(name, x.shape[0], timing, target_text, "images/s"))
    return rows


def checkpointing_rows(x, target, rounds: int, clock) -> list[dict]:
    """Our U-Net with gradient checkpointing in its encoder against the plain one (same weights, fp32
    channels-last training steps): activations kept for backward and step time."""
    plain = _ours()
    checkpointed = _ours()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.encoder.backbone.set_grad_checkpointing()  # the decoder keeps its activations
    steps = {
        "ours": _step_fn(checkpointed, x, target, True, False, True),
        "anchor": _step_fn(plain, x, target, True, False, True),
    }
    shape = f"({x.shape[0]}x3x{x.shape[2]}x{x.shape[3]})"
    kept_plain, kept = saved_activation_bytes(steps["anchor"]), saved_activation_bytes(steps["ours"])
    name = f"activations kept forward to backward, encoder grad checkpointing vs plain {shape}"
    # No target: the stem and the decoder keep theirs, so the encoder's share bounds the saving.
    rows = [row(name, kept / 2**20, kept_plain / 2**20, "MiB", kept_plain / kept, "(info)")]
    timing = time_rounds(steps, rounds, clock=clock)
    name = f"train step, encoder grad checkpointing vs plain {shape}"
    rows.append(speed_row(name, x.shape[0], timing, ">= 0.71 (step <= 1.4x plain)", unit="images/s"))
    return rows


def run(quick: bool = False, clock: str = "wall") -> list[dict]:
    """Measure and return the segmentation rows.

    Args:
        quick: 128x128 batch 2 instead of 512x512 batch 4.
        clock: "wall" (perf_counter) or "cpu" (process CPU time; see the module docstring).
    """
    torch.manual_seed(0)
    timer = CLOCKS[clock]
    size, batch, rounds = (128, 2, 7) if quick else (512, 4, 5)
    x = torch.randn(batch, 3, size, size)
    target = (torch.rand(batch, 1, size, size) > 0.5).float()
    shape = f"({batch}x3x{size}x{size})"
    rows = []
    settings = [  # name, train, bf16, channels_last, target
        ("train step, default (fp32, channels_last)", True, False, True, 1.0),
        ("inference, default (fp32, channels_last)", False, False, True, 1.0),
        ("train step, ours in smp's memory format (fp32, NCHW)", True, False, False, None),
        ("inference, ours in smp's memory format (fp32, NCHW)", False, False, False, None),
        ("train step ours bf16+channels_last vs smp fp32", True, True, True, 2.0),
        ("inference ours bf16+channels_last vs smp fp32", False, True, True, 2.0),
    ]
    flops_per_image = forward_flops(_models()[0], x[:1])
    for name, train, bf16, channels_last, target_ratio in settings:
        if bf16 and not measure_bf16():
            rows.append(untimed_bf16_row(f"{name} {shape}", "images/s"))
            continue
        ours, anchor = _models()
        steps = {
            "ours": _step_fn(ours, x, target, train, bf16, channels_last, fused=True),
            "anchor": _step_fn(anchor, x, target, train, False, False),
        }
        timing = time_rounds(steps, rounds, clock=timer)
        target_text = bf16_target(target_ratio) if bf16 else target_ratio
        target_text = _quick_smoke(target_text, quick and target_ratio is not None)
        flops = flops_per_image * (TRAIN_FLOPS_FACTOR if train else 1)
        dtype = torch.bfloat16 if bf16 else torch.float32
        rows.append(
            speed_row(
                f"{name} {shape}", batch, timing, target_text, "images/s", flops_per_item=flops, dtype=dtype
            )
        )
    rows += same_tricks_rows(x, target, rounds, timer, quick)
    rows += checkpointing_rows(x, target, rounds, timer)
    # No targets below. What autocast does for smp itself on this machine, and smp against a second copy of
    # itself: the control's distance from 1.00x is the noise within which ours and smp are not told apart.
    name = f"inference smp bf16+channels_last vs smp fp32 {shape}"
    if measure_bf16():
        timing = _smp_against_smp(x, target, False, True, rounds, timer)
        rows.append(speed_row(name, batch, timing, None, unit="images/s"))
    else:
        rows.append(untimed_bf16_row(name, "images/s"))
    for kind, train in (("train step", True), ("inference", False)):
        timing = _smp_against_smp(x, target, train, False, rounds, timer)
        name = f"control: {kind} fp32, smp vs a second copy of itself {shape}"
        rows.append(speed_row(name, batch, timing, None, unit="images/s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.segmentation``: print the machine line and the segmentation table."""
    parser = area_parser("segmentation", __doc__, "smaller images and batch (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="wall or process CPU time")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(quick=args.quick, clock=args.clock)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    show("seg", rows, note=f"clock {args.clock} | load average {load:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
