"""Backbone speed and memory, side by side with torchvision in one process.

    python tools/benchmark_backbone.py            # ResNet-18 and ResNet-50, batch 8, 224x224
    python tools/benchmark_backbone.py --quick    # ResNet-18 only, at 160 px

Each row times ours and the anchor alternately (AB BA AB ...); the ratio is the median of the per-round
ratios, so drift in machine load hits both sides alike. The frozen-stage memory row counts the bytes
autograd saves for backward, which is the memory that freezing is supposed to remove (CPU peak-RSS is
process-wide and cannot be compared in-process).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Compile in this process: a pool of compile workers would compete with the timed calls on 2 cores.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
import torchvision  # noqa: E402

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


def time_pair(
    ours, anchor, repeats: int, warmup: int = 1, clock=time.perf_counter
) -> tuple[float, float, float]:
    """Time two callables alternately (``clock``: any seconds counter, e.g. ``time.process_time``).

    Returns the median seconds per call of each and the median over rounds of anchor/ours time: pairing
    the two calls of a round cancels the slow swings in speed a shared virtual machine goes through, which
    a ratio of two separate medians does not.
    """
    for _ in range(warmup):
        ours()
        anchor()
    ours_times, anchor_times = [], []
    pairs = [(ours, ours_times), (anchor, anchor_times)]
    for index in range(repeats):
        # Swap who goes first every round: the second call of a round finds caches warmed by the first.
        for function, times in pairs if index % 2 == 0 else pairs[::-1]:
            start = clock()
            function()
            times.append(clock() - start)
    ratio = statistics.median(a / o for o, a in zip(ours_times, anchor_times))
    return statistics.median(ours_times), statistics.median(anchor_times), ratio


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


def row(name, ours, anchor, unit, target, ratio=None, higher_is_better=True) -> dict:
    if ratio is None:
        ratio = ours / anchor if higher_is_better else anchor / ours
    return dict(name=name, ours=ours, anchor=anchor, unit=unit, ratio=ratio, target=target)


def speed_row(name: str, batch: int, timing: tuple[float, float, float], target: str) -> dict:
    """A row in images/s from a `time_pair` result (ratio = the paired one, > 1 when ours is faster)."""
    t_ours, t_anchor, ratio = timing
    return row(name, batch / t_ours, batch / t_anchor, "img/s", target, ratio=ratio)


def bench_arch(arch: str, batch: int, size: int, repeats: int) -> list[dict]:
    images = torch.randn(batch, 3, size, size)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    ours = create_backbone(arch, out_indices=(4,)).eval()
    anchor = torchvision_features(arch).eval()
    ours.load_state_dict(anchor.state_dict())

    def versus_anchor(function, warmup: int = 1):
        return time_pair(function, lambda: anchor(images), repeats, warmup)

    rows = []
    with torch.inference_mode():
        rows.append(
            speed_row(f"{arch} inference fp32 default", batch, versus_anchor(lambda: ours(images)), ">= 0.98")
        )
        fast = prepare_for_inference(ours)
        timing = versus_anchor(lambda: fast(images_cl))
        rows.append(speed_row(f"{arch} inference fused BN + channels-last", batch, timing, "(info)"))
        compiled = prepare_for_inference(ours, compile=True)
        timing = versus_anchor(lambda: compiled(images_cl), warmup=2)
        name = f"{arch} inference fast path (fused BN + channels-last + torch.compile freezing)"
        rows.append(speed_row(name, batch, timing, ">= 1.4"))
        # The same compilation is open to torchvision users: this row shows how much of the gain it is.
        anchor_compiled = prepare_for_inference(anchor, compile=True)
        timing = versus_anchor(lambda: anchor_compiled(images_cl), warmup=2)
        rows.append(
            speed_row(f"{arch}   reference: torchvision through the same fast path", batch, timing, "(info)")
        )

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fast(images_cl)

        rows.append(
            speed_row(
                f"{arch} inference bf16 autocast (fused BN + channels-last)",
                batch,
                versus_anchor(bf16),
                ">= 2.0",
            )
        )

    ours.train()
    anchor.train()
    step_ours = training_step(ours, images, ours.num_features)
    step_anchor = training_step(anchor, images, ours.num_features)
    rows.append(
        speed_row(f"{arch} training step", batch, time_pair(step_ours, step_anchor, repeats), ">= 0.98")
    )

    frozen = create_backbone(arch, out_indices=(4,), frozen_stages=3)
    frozen.load_state_dict(anchor.state_dict())  # loaded weights: freezing them is legitimate
    full = create_backbone(arch, out_indices=(4,), frozen_stages=-1)
    frozen.train()
    full.train()
    step_frozen = training_step(frozen, images, ours.num_features)
    step_full = training_step(full, images, ours.num_features)
    timing = time_pair(step_frozen, step_full, repeats)
    rows.append(speed_row(f"{arch} train step frozen_stages=3 vs -1", batch, timing, ">= 1.8"))
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
        return bench_arch("resnet18", batch=8, size=160, repeats=7)
    rows = []
    for arch in ("resnet18", "resnet50"):
        rows += bench_arch(arch, batch=8, size=224, repeats=9)
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
