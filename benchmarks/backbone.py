"""Backbone speed and memory, side by side with torchvision in one process.

    python -m benchmarks.backbone            # ResNet-18 and ResNet-50, batch 8, 224x224
    python -m benchmarks.backbone --quick    # ResNet-18 only, at 160 px

Each row times ours and the anchor alternately (AB BA AB ...); the ratio is the median of the per-round
ratios, so drift in machine load hits both sides alike. The memory rows count the bytes of the
activations autograd saves for backward (weights, held anyway, left out), which is the memory that
freezing and gradient checkpointing are supposed to remove (CPU peak-RSS is process-wide and cannot be
compared in-process). The gradient checkpointing rows train a ResNet-50 fully, batch 16 at 224 px (quick:
batch 4 at 128 px), plain against checkpointed: the activations kept from forward to backward, the peak
in backward (those plus the largest level, which backward recomputes), and the step time.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch._inductor.config as inductor_config
import torchvision

from backbones import create_backbone, prepare_for_inference
from benchmarks.peak import TRAIN_FLOPS_FACTOR, forward_flops
from benchmarks.report import (
    area_parser,
    bf16_target,
    measure_bf16,
    row,
    show,
    speed_row,
    untimed_bf16_row,
)
from benchmarks.timing import time_rounds


def saved_activation_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for backward during ``step()``, parameters left out.

    A convolution saves its weight too, but the model holds that anyway; counted, it would dominate at
    small inputs and hide the activations.
    """
    total = 0

    def pack(tensor):
        nonlocal total
        if not isinstance(tensor, torch.nn.Parameter):
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
    """A closure doing one SGD step of ``model`` + a linear head on ``images`` (features from layer4)."""
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


def bench_arch(arch: str, batch: int, size: int, repeats: int) -> list[dict]:
    """The rows of one architecture: inference paths, training step, frozen stages (speed and memory)."""
    images = torch.randn(batch, 3, size, size)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    ours = create_backbone(arch, out_indices=(4,)).eval()
    anchor = torchvision_features(arch).eval()
    ours.load_state_dict(anchor.state_dict())

    def versus_anchor(function, warmup: int = 1):
        return time_rounds({"ours": function, "anchor": lambda: anchor(images)}, repeats, warmup)

    flops = forward_flops(ours, images[:1])  # per image
    rows = []
    with torch.inference_mode():
        timing = versus_anchor(lambda: ours(images))
        rows.append(
            speed_row(f"{arch} inference fp32 default", batch, timing, ">= 0.98", flops_per_item=flops)
        )
        fast = prepare_for_inference(ours)
        timing = versus_anchor(lambda: fast(images_cl))
        name = f"{arch} inference fused BN + channels-last"
        rows.append(speed_row(name, batch, timing, "(info)", flops_per_item=flops))
        compiled = prepare_for_inference(ours, compile=True)
        timing = versus_anchor(lambda: compiled(images_cl), warmup=2)
        name = f"{arch} inference fast path (fused BN + channels-last + torch.compile freezing)"
        rows.append(speed_row(name, batch, timing, ">= 1.4", flops_per_item=flops))
        # The same compilation is open to torchvision users: this row shows how much of the gain it is.
        anchor_compiled = prepare_for_inference(anchor, compile=True)
        timing = versus_anchor(lambda: anchor_compiled(images_cl), warmup=2)
        name = f"{arch}   reference: torchvision through the same fast path"
        rows.append(speed_row(name, batch, timing, "(info)"))

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fast(images_cl)

        name = f"{arch} inference bf16 autocast (fused BN + channels-last)"
        if measure_bf16():
            timing = versus_anchor(bf16)
            target = bf16_target(">= 2.5" if arch == "resnet50" else ">= 2.0")
            rows.append(speed_row(name, batch, timing, target, flops_per_item=flops, dtype=torch.bfloat16))
        else:
            rows.append(untimed_bf16_row(name, "img/s"))

    ours.train()
    anchor.train()
    steps = {
        "ours": training_step(ours, images, ours.num_features),
        "anchor": training_step(anchor, images, ours.num_features),
    }
    timing = time_rounds(steps, repeats)
    train_flops = TRAIN_FLOPS_FACTOR * flops
    rows.append(speed_row(f"{arch} training step", batch, timing, ">= 0.98", flops_per_item=train_flops))

    frozen = create_backbone(arch, out_indices=(4,), frozen_stages=3)
    frozen.load_state_dict(anchor.state_dict())  # loaded weights: freezing them is legitimate
    full = create_backbone(arch, out_indices=(4,), frozen_stages=-1)
    frozen.train()
    full.train()
    step_frozen = training_step(frozen, images, ours.num_features)
    step_full = training_step(full, images, ours.num_features)
    timing = time_rounds({"ours": step_frozen, "anchor": step_full}, repeats)
    rows.append(speed_row(f"{arch} train step frozen_stages=3 vs -1", batch, timing, ">= 1.8"))
    mem_frozen, mem_full = saved_activation_bytes(step_frozen), saved_activation_bytes(step_full)
    rows.append(
        row(
            f"{arch} activations saved for backward, frozen_stages=3 vs -1",
            mem_frozen / 2**20,
            mem_full / 2**20,
            "MiB",
            mem_full / mem_frozen,
            "< 1 MiB ratio > 1",
        )
    )
    return rows


def largest_level_bytes(model, images) -> int:
    """Activation bytes of the largest of levels 1..4 run alone: what checkpointing recomputes at a time."""
    with torch.no_grad():
        inputs = [model.forward_level(0, images)]
        for level in range(1, 4):
            inputs.append(model.forward_level(level, inputs[-1]))
    return max(
        saved_activation_bytes(functools.partial(model.forward_level, level, x.requires_grad_()))
        for level, x in enumerate(inputs, start=1)
    )


def checkpointing_rows(quick: bool) -> list[dict]:
    """ResNet-50 full fine-tuning, gradient checkpointing against the plain model: memory and step time."""
    batch, size, repeats = (4, 128, 3) if quick else (16, 224, 7)
    images = torch.randn(batch, 3, size, size)
    plain = create_backbone("resnet50", out_indices=(4,)).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    step_plain = training_step(plain, images, plain.num_features)
    step_checkpointed = training_step(checkpointed, images, plain.num_features)
    shape = f"({batch}x3x{size}x{size})"
    kept_plain = saved_activation_bytes(step_plain)
    kept = saved_activation_bytes(step_checkpointed)
    # The plain step frees its activations as backward goes: its peak is what forward kept.
    peak = kept + largest_level_bytes(checkpointed, images)
    name = f"resnet50 activations kept forward to backward, grad checkpointing vs plain {shape}"
    rows = [row(name, kept / 2**20, kept_plain / 2**20, "MiB", kept_plain / kept, ">= 2.5")]
    name = f"resnet50 activation peak in backward (kept + largest level), grad checkpointing vs plain {shape}"
    rows.append(row(name, peak / 2**20, kept_plain / 2**20, "MiB", kept_plain / peak, "(info)"))
    timing = time_rounds({"ours": step_checkpointed, "anchor": step_plain}, repeats)
    name = f"resnet50 train step, grad checkpointing vs plain {shape}"
    rows.append(speed_row(name, batch, timing, ">= 0.71 (step <= 1.4x plain)"))
    return rows


def run(quick: bool = False) -> list[dict]:
    """The backbone rows: ResNet-18 at 160 px (quick), else ResNet-18 and ResNet-50 at 224 px; then the
    gradient checkpointing rows."""
    # Compile in this process: a pool of compile workers would compete with the timed calls on 2 cores.
    with inductor_config.patch(compile_threads=1):
        if quick:
            rows = bench_arch("resnet18", batch=8, size=160, repeats=7)
        else:
            rows = []
            for arch in ("resnet18", "resnet50"):
                rows += bench_arch(arch, batch=8, size=224, repeats=9)
    return rows + checkpointing_rows(quick)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.backbone``: print the machine line and the backbone table."""
    parser = area_parser("backbone", __doc__, "ResNet-18 at 160 px, 7 rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    show("backbone", run(quick=args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
