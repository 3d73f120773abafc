"""Model and data analysis: per-stage parameters and FLOPs, the LR schedule, PNG grids of samples.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv FLOPs = 2 x MACs; BatchNorm
and activations are not counted, as in the ResNet paper's table).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from backbones import ResNet
from backbones.errors import UserError
from tasks.engine.task import SampleGrid, Task

from .errors import DeployError


def flop_counts(model: nn.Module, example: Any) -> tuple[dict[str, int], int]:
    """FLOPs of one forward pass on `example` per module path ("" = whole model) and the total.

    Args:
        model: any module.
        example: what its forward takes (`Task.model_input` of a batch: a tensor, or a list of images).
    """
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    root = type(model).__name__
    per_module = {}
    for key, ops in counter.get_flop_counts().items():
        if key == root or key.startswith(root + "."):
            per_module[key[len(root) + 1 :]] = sum(ops.values())
    return per_module, counter.get_total_flops()


def count_macs(model: nn.Module, example: Any) -> int:
    """Multiply-accumulates of one forward pass on `example` (FLOPs / 2)."""
    return flop_counts(model, example)[1] // 2


def backbone_path(model: nn.Module) -> str | None:
    """Module path of the model's ResNet ("" when the model is one), None when it has none."""
    for name, module in model.named_modules():
        if isinstance(module, ResNet):
            return name
    return None


def stage_rows(model: nn.Module, example: Any) -> list[dict[str, Any]]:
    """Rows (name, params, gflops, share) for the backbone stages (stem, layer1..4) and the other parts.

    Parts are the siblings of the backbone along the path from the model root (e.g. ``decoder``,
    ``segmentation_head``; ``backbone.fpn``, ``rpn``, ``roi_heads``), so the rows add up to the whole model.
    `example` is what the model's forward takes (see `flop_counts`).
    """
    flops, total = flop_counts(model, example)
    path = backbone_path(model)
    groups: list[tuple[str, list[str]]] = []
    if path is not None:
        prefix = f"{path}." if path else ""
        backbone = model.get_submodule(path) if path else model
        stem = [n for n in ("conv1", "bn1") if hasattr(backbone, n)]
        groups.append((f"{prefix}stem", [prefix + n for n in stem]))
        for level in range(1, 5):
            if hasattr(backbone, f"layer{level}"):
                groups.append((f"{prefix}layer{level}", [f"{prefix}layer{level}"]))
        parts = path.split(".") if path else []
        for depth in range(len(parts)):
            parent = ".".join(parts[:depth])
            module = model.get_submodule(parent) if parent else model
            for child, _ in module.named_children():
                if child != parts[depth]:
                    full = f"{parent}.{child}" if parent else child
                    groups.append((full, [full]))
    else:
        groups = [(n, [n]) for n, _ in model.named_children()]
    # FLOPs are summed over leaf modules: a parent whose forward is bypassed (smp's decoder is run block by
    # block) has no entry of its own, but its leaves do.
    leaves = {n for n, m in model.named_modules() if next(m.children(), None) is None}
    rows = []
    for name, members in groups:
        params = sum(p.numel() for m in members for p in model.get_submodule(m).parameters())
        group_flops = sum(
            value for key, value in flops.items() if key in leaves and any(_under(key, m) for m in members)
        )
        rows.append(
            dict(name=name, params=params, gflops=group_flops / 1e9, share=group_flops / max(total, 1))
        )
    other = total - sum(r["gflops"] for r in rows) * 1e9
    if other > 0.001 * total:
        rows.append(dict(name="(outside modules)", params=0, gflops=other / 1e9, share=other / total))
    rows.append(
        dict(name="total", params=sum(p.numel() for p in model.parameters()), gflops=total / 1e9, share=1.0)
    )
    return rows


def _under(key: str, member: str) -> bool:
    return key == member or key.startswith(member + ".")


def format_stage_table(rows: list[dict[str, Any]]) -> str:
    """Text table of :func:`stage_rows`."""
    lines = [f"{'part':<28}{'params':>14}{'GFLOPs':>10}{'share':>8}", "-" * 60]
    for r in rows:
        lines.append(f"{r['name']:<28}{r['params']:>14,}{r['gflops']:>10.3f}{r['share'] * 100:>7.1f}%")
    return "\n".join(lines)


def lr_curves(train_cfg: Any, steps_per_epoch: int, model: nn.Module | None = None) -> dict[str, list[float]]:
    """Learning rates of every optimizer update, from the engine's own optimizer and scheduler builders.

    Keys are those of metrics.jsonl (`tasks.engine.optim.lr_record`): `lr`, plus `lr/<group>` per part when
    `model` is given and the config sets per-part learning rates (`backbone_lr_mult`, `layer_decay`).
    The trainer calls ``scheduler.step_update(global_step)`` before each update; so does this function.
    """
    from tasks.engine.optim import build_optimizer, build_scheduler, lr_record, per_part_lrs

    if model is None or not per_part_lrs(train_cfg):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=train_cfg.lr)
    else:
        optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg, steps_per_epoch)
    curves: dict[str, list[float]] = {}
    for step in range(max(1, train_cfg.epochs * steps_per_epoch)):
        scheduler.step_update(step)
        for key, value in lr_record(optimizer).items():
            curves.setdefault(key, []).append(value)
    return curves


def lr_schedule(train_cfg: Any, steps_per_epoch: int) -> list[float]:
    """The base learning rate of every optimizer update (`lr_curves`' `lr`)."""
    return lr_curves(train_cfg, steps_per_epoch)["lr"]


def plot_lr_schedule(
    train_cfg: Any, steps_per_epoch: int, path: str, title: str = "", model: nn.Module | None = None
) -> dict[str, list[float]]:
    """Write the schedule as a PNG (x: epochs), one curve per param group; return `lr_curves`.

    Without `model`, or without per-part learning rates, the one curve is the base lr.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = lr_curves(train_cfg, steps_per_epoch, model)
    groups = {key[len("lr/") :]: rates for key, rates in curves.items() if key != "lr"}
    groups = groups or {"lr": curves["lr"]}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, rates in groups.items():
        ax.plot(np.arange(len(rates)) / steps_per_epoch, rates, label=name)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(
        title
        or f"{train_cfg.scheduler}, warmup {train_cfg.warmup_epochs} epochs, {steps_per_epoch} steps/epoch"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return curves


def input_size(task: Task, override: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(1, C, H, W) of the FLOP count: `override` (H, W), else the size the task trains on."""
    height, width = override or task.input_size()
    return (1, task.input_channels, height, width)


def steps_per_epoch(task: Task, given: int = 0) -> tuple[int, str]:
    """Optimizer updates per epoch as the trainer counts them, and where the number came from.

    The trainer's count: the task's own batch sampler (few-shot episodes, aspect-ratio groups) when it
    has one, else full batches of the training set; then train.max_steps_per_epoch and accumulation.
    """
    if given:
        return given, "given"
    try:
        train = task.build_datasets()[0]
    except (UserError, OSError):
        return 100, "assumed (data not readable; pass --steps-per-epoch)"
    t = task.cfg.train
    sampler = task.train_batch_sampler(train, t.batch_size, t.seed)
    if sampler is not None:
        batches, how = len(sampler), "from the task's batch sampler"
    else:
        # A set smaller than one batch still gives one batch (the trainer keeps the ragged batch then).
        batches, how = len(train) // t.batch_size or 1, f"from {len(train)} training samples"
    if t.max_steps_per_epoch:
        batches = min(batches, t.max_steps_per_epoch * t.accum_steps)
    return math.ceil(batches / t.accum_steps), how


# ----------------------------------------------------------------------------------------- browser


def _display(picture: Any) -> np.ndarray:
    """A SampleGrid picture as (H, W, 3) uint8: uint8 pictures as they are, others min-max stretched."""
    from tasks.segmentation.overlay import to_display

    if isinstance(picture, torch.Tensor):
        if picture.dtype == torch.uint8:
            return picture.permute(1, 2, 0).numpy()
        return to_display(picture.detach().float().numpy())
    return picture if picture.dtype == np.uint8 else to_display(picture)


def _grid(grid: SampleGrid, path: str) -> None:
    """Draw `grid` as a PNG at `path` (row titles, if any, left of each row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, grid.columns)
    rows = math.ceil(len(grid.pictures) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, title in zip(axes.flat, grid.pictures, grid.titles):
        ax.imshow(_display(picture))
        ax.set_title(title, fontsize=8)
    for r, text in enumerate(grid.row_titles):
        axes[r, 0].text(-0.1, 0.5, text, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def browse_dataset(task: Task, path: str, count: int = 16, split: str = "train") -> int:
    """Write a PNG grid of up to `count` samples as the task draws them (`Task.analysis_samples`).

    Returns:
        The number of pictures drawn.

    Raises:
        DeployError: the data cannot be read, or the split is empty.
    """
    try:
        grid = task.analysis_samples(split, count)
    except (UserError, OSError) as err:
        raise DeployError(f"cannot read the {split} data ({err}); set data.root=...") from None
    if not grid.pictures:
        raise DeployError(f"the {split} set is empty")
    _grid(grid, path)
    return len(grid.pictures)
