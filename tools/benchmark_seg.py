"""Benchmark: our U-Net (resnet34 backbone + smp decoder) against smp.Unet("resnet34") in one process.

    python tools/benchmark_seg.py            # 512x512, batch 4 (the issue's setting)
    python tools/benchmark_seg.py --quick    # 128x128, batch 2 (smoke run for tools/benchmark.py --quick)

Rows: training step (forward + loss + backward + AdamW step) and inference images/s: our default path
(fp32 with channels-last weights, what train_seg runs by default) and ours in smp's NCHW format against
smp's fp32 default, then our fast path (bf16 autocast + channels-last) against smp's fp32 default.
Measurements of ours and the anchor alternate round by round so that load from other processes hits both
alike; the ratio is the median of the per-round ratios.  Control rows time smp against a second copy of
itself: their distance from 1.00x is the machine's noise.  ``--clock cpu`` times with the process CPU
clock instead of the wall clock: on a machine shared with other jobs it measures the work done rather
than the waiting (use it with ``--threads 1``, where no OpenMP thread spins at a barrier while its
partner is descheduled).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from backbones import create_backbone  # noqa: E402
from tasks.segmentation.model import UNet  # noqa: E402
from tasks.segmentation.smp_parts import smp_unet  # noqa: E402
from tools.benchmark_backbone import time_pair  # noqa: E402


def _models():
    ours = UNet(create_backbone("resnet34", out_indices=(0, 1, 2, 3, 4)), 1)
    return ours, smp_unet("resnet34", classes=1)


def _step_fn(model, x, target, train: bool, bf16: bool, channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None
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


def _time_pair(step_a, step_b, rounds: int, batch: int, clock) -> tuple[float, float, float]:
    """Images/s of A and B (medians) and the median per-round speed ratio A/B (see `time_pair`)."""
    seconds_a, seconds_b, ratio = time_pair(step_a, step_b, rounds, clock=clock)
    return batch / seconds_a, batch / seconds_b, ratio


def _smp_against_smp(x, target, train: bool, fast: bool, rounds: int, batch: int, clock):
    """A copy of smp's U-Net (bf16 + channels-last when ``fast``) timed against smp's fp32 default."""
    _, anchor = _models()
    _, other = _models()
    other.load_state_dict(anchor.state_dict())
    return _time_pair(
        _step_fn(other, x, target, train, fast, fast),
        _step_fn(anchor, x, target, train, False, False),
        rounds,
        batch,
        clock,
    )


def _row(name: str, ours: float, anchor: float, ratio: float, target: float | None) -> dict:
    return {
        "name": name,
        "ours": round(ours, 3),
        "anchor": round(anchor, 3),
        "unit": "images/s",
        "ratio": round(ratio, 3),
        "target": target,
    }


def run(quick: bool = False, clock: str = "wall") -> list[dict]:
    """Measure and return rows (name, ours, anchor, unit, ratio, target).

    Args:
        quick: 128x128 batch 2 instead of the issue's 512x512 batch 4.
        clock: "wall" (perf_counter) or "cpu" (process CPU time; see the module docstring).
    """
    torch.manual_seed(0)
    timer = {"wall": time.perf_counter, "cpu": time.process_time}[clock]
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
    for name, train, bf16, channels_last, target_ratio in settings:
        ours, anchor = _models()
        step_ours = _step_fn(ours, x, target, train, bf16, channels_last)
        step_anchor = _step_fn(anchor, x, target, train, False, False)
        timing = _time_pair(step_ours, step_anchor, rounds, batch, timer)
        rows.append(_row(f"{name} {shape}", *timing, target_ratio))
    # No targets below. What autocast does for smp itself on this machine, and smp against a second copy of
    # itself: the control's distance from 1.00x is the noise within which ours and smp are not told apart.
    timing = _smp_against_smp(x, target, False, True, rounds, batch, timer)
    rows.append(_row(f"inference smp bf16+channels_last vs smp fp32 {shape}", *timing, None))
    for kind, train in (("train step", True), ("inference", False)):
        timing = _smp_against_smp(x, target, train, False, rounds, batch, timer)
        rows.append(_row(f"control: {kind} fp32, smp vs a second copy of itself {shape}", *timing, None))
    return rows


def machine() -> str:
    """One line describing where the numbers come from."""
    # oneDNN reports bf16 "supported" on any AVX-512 CPU (it emulates); native means the avx512_bf16 or
    # amx_bf16 instructions, which is what makes bf16 autocast fast.
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    return (
        f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
        f"threads {torch.get_num_threads()} | native bf16 {'yes' if native else 'no'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images and batch (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall or process CPU time")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(quick=args.quick, clock=args.clock)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{machine()} | clock {args.clock} | load average {load:.1f}")
    print(f"{'benchmark':<72} {'ours':>9} {'smp':>9} {'ratio':>7} {'target':>7}")
    for r in rows:
        target = "-" if r["target"] is None else f">={r['target']}"
        print(f"{r['name']:<72} {r['ours']:>9.3f} {r['anchor']:>9.3f} {r['ratio']:>7.3f} {target:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
