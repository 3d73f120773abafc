"""Backbone speed and memory, side by side with torchvision in one process.

    python tools/benchmark_backbone.py            # ResNet-18 and ResNet-50, batch 8, 224x224
    python tools/benchmark_backbone.py --quick    # fewer repeats, ResNet-18 at 160 px

Each row times ours and the anchor alternately (ABAB...) and reports medians, so drift in machine load hits
both sides alike. The frozen-stage memory row counts the bytes autograd saves for backward, which is the
memory that freezing is supposed to remove (CPU peak-RSS is process-wide and cannot be compared in-process).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbones import create_backbone, prepare_for_inference  # noqa: E402
from tasks.engine.runtime import cpu_has_native_bf16  # noqa: E402


def machine_description() -> str:
    """One line naming CPU/GPU, threads and library versions, printed above every table."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = cpu_has_native_bf16()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}; {torch.get_num_threads()} threads; native bf16: {bf16}; {gpu}; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    )


def time_pair(ours, anchor, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds per call of two callables, measured alternately."""
    for _ in range(warmup):
        ours()
        anchor()
    ours_times, anchor_times = [], []
    for _ in range(repeats):
        for function, times in ((ours, ours_times), (anchor, anchor_times)):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    return statistics.median(ours_times), statistics.median(anchor_times)


def saved_activation_bytes(step) -> int:
    """Bytes of tensors autograd keeps for backward during ``step()``."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return total


def torchvision_features(arch: str) -> torch.nn.Module:
    """torchvision's model up to layer4 through its own IntermediateLayerGetter (what its detectors use)."""
    from torchvision.models._utils import IntermediateLayerGetter

    return IntermediateLayerGetter(getattr(torchvision.models, arch)(), {"layer4": "layer4"})


def training_step(model, images, head_channels: int):
    head = torch.nn.Linear(head_channels, 10)
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    labels = torch.randint(0, 10, (images.shape[0],))

    def step():
        output = model(images)
        features = output["layer4"] if isinstance(output, dict) else output
        loss = torch.nn.functional.cross_entropy(head(features.mean((2, 3))), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def row(name, ours, anchor, unit, target, higher_is_better=True) -> dict:
    ratio = ours / anchor if higher_is_better else anchor / ours
    return dict(name=name, ours=ours, anchor=anchor, unit=unit, ratio=ratio, target=target)


def bench_arch(arch: str, batch: int, size: int, repeats: int) -> list[dict]:
    images = torch.randn(batch, 3, size, size)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    ours = create_backbone(arch, out_indices=(4,)).eval()
    anchor = torchvision_features(arch).eval()
    ours.load_state_dict(anchor.state_dict())
    rows = []
    with torch.inference_mode():
        t_ours, t_anchor = time_pair(lambda: ours(images), lambda: anchor(images), repeats)
        rows.append(
            row(f"{arch} inference fp32 default", batch / t_ours, batch / t_anchor, "img/s", ">= 0.98")
        )
        fast = prepare_for_inference(ours)
        t_fast, t_anchor = time_pair(lambda: fast(images_cl), lambda: anchor(images), repeats)
        rows.append(
            row(
                f"{arch} inference fast (fused BN + channels-last)",
                batch / t_fast,
                batch / t_anchor,
                "img/s",
                ">= 1.4",
            )
        )

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fast(images_cl)

        t_bf16, t_anchor = time_pair(bf16, lambda: anchor(images), repeats)
        rows.append(
            row(
                f"{arch} inference bf16 autocast (fast path)",
                batch / t_bf16,
                batch / t_anchor,
                "img/s",
                ">= 2.0",
            )
        )

    ours.train()
    anchor.train()
    step_ours = training_step(ours, images, ours.num_features)
    step_anchor = training_step(anchor, images, ours.num_features)
    t_ours, t_anchor = time_pair(step_ours, step_anchor, repeats)
    rows.append(row(f"{arch} training step", batch / t_ours, batch / t_anchor, "img/s", ">= 0.98"))

    frozen = create_backbone(arch, out_indices=(4,), frozen_stages=3)
    frozen.load_state_dict(anchor.state_dict())  # loaded weights: freezing them is legitimate
    full = create_backbone(arch, out_indices=(4,), frozen_stages=-1)
    frozen.train()
    full.train()
    step_frozen = training_step(frozen, images, ours.num_features)
    step_full = training_step(full, images, ours.num_features)
    t_frozen, t_full = time_pair(step_frozen, step_full, repeats)
    rows.append(
        row(f"{arch} train step frozen_stages=3 vs -1", batch / t_frozen, batch / t_full, "img/s", ">= 1.8")
    )
    mem_frozen, mem_full = saved_activation_bytes(step_frozen), saved_activation_bytes(step_full)
    rows.append(
        row(
            f"{arch} activations saved for backward, frozen_stages=3 vs -1",
            mem_frozen / 2**20,
            mem_full / 2**20,
            "MiB",
            "< 1 MiB ratio > 1",
            higher_is_better=False,
        )
    )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Run the backbone benchmarks and return table rows (used by tools/benchmark.py)."""
    if quick:
        return bench_arch("resnet18", batch=8, size=160, repeats=3)
    rows = []
    for arch in ("resnet18", "resnet50"):
        rows += bench_arch(arch, batch=8, size=224, repeats=5)
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows."""
    lines = ["| benchmark | ours | anchor | unit | ratio | target |", "|---|---:|---:|---|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['ours']:.2f} | {r['anchor']:.2f} | {r['unit']} "
            f"| {r['ratio']:.2f}x | {r['target']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at 160 px, 3 repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine_description())
    print(format_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
