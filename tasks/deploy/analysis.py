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

from .errors import DeployError


def _run(model: nn.Module, x: torch.Tensor) -> None:
    # torchvision detectors take a list of images; everything else a batch.
    model([x[0]]) if type(model).__name__ in ("FasterRCNN", "GeneralizedRCNN") else model(x)


def flop_counts(model: nn.Module, input_size: tuple[int, ...]) -> tuple[dict[str, int], int]:
    """FLOPs of one forward pass per module path ("" = whole model) and the total."""
    model.eval()
    x = torch.zeros(input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _run(model, x)
    root = type(model).__name__
    per_module = {}
    for key, ops in counter.get_flop_counts().items():
        if key == root or key.startswith(root + "."):
            per_module[key[len(root) + 1 :]] = sum(ops.values())
    return per_module, counter.get_total_flops()


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass (FLOPs / 2)."""
    return flop_counts(model, input_size)[1] // 2


def backbone_path(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, ResNet):
            return name
    return None


def stage_rows(model: nn.Module, input_size: tuple[int, ...]) -> list[dict[str, Any]]:
    """Rows (name, params, gflops, share) for the backbone stages (stem, layer1..4) and the other parts.

    Parts are the siblings of the backbone along the path from the model root (e.g. ``decoder``,
    ``segmentation_head``; ``backbone.fpn``, ``rpn``, ``roi_heads``), so the rows add up to the whole model.
    """
    flops, total = flop_counts(model, input_size)
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


def lr_schedule(train_cfg: Any, steps_per_epoch: int) -> list[float]:
    """Learning rate of every optimizer update, from the engine's own scheduler builder.

    The trainer calls ``scheduler.step_update(global_step)`` before each update; so does this function.
    """
    from tasks.engine.optim import build_scheduler

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=train_cfg.lr)
    scheduler = build_scheduler(optimizer, train_cfg, steps_per_epoch)
    rates = []
    for step in range(max(1, train_cfg.epochs * steps_per_epoch)):
        scheduler.step_update(step)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def plot_lr_schedule(train_cfg: Any, steps_per_epoch: int, path: str, title: str = "") -> list[float]:
    """Write the schedule as a PNG (x: epochs) and return the per-update learning rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = lr_schedule(train_cfg, steps_per_epoch)
    epochs = np.arange(len(rates)) / steps_per_epoch
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(epochs, rates)
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
    return rates


def default_input_size(task: str, cfg: Any, override=None) -> tuple[int, ...]:
    """(1, C, H, W) the task trains on: crop size, detector min_size, or data.image_size."""
    if override:
        height, width = override
    elif task == "segmentation":
        height, width = (cfg.aug.crop_size or [256, 256])[:2]
    elif task == "detection":
        height = width = cfg.model.min_size[0]
    else:
        height = width = cfg.data.image_size
    channels = cfg.model.in_chans if task == "segmentation" else getattr(cfg.data, "channels", 3)
    return (1, channels, height, width)


def steps_per_epoch(task: str, cfg: Any, given: int = 0) -> tuple[int, str]:
    """Optimizer updates per epoch as the trainer counts them, and where the number came from."""
    from .inputs import task_datasets

    if given:
        return given, "given"
    try:
        train = task_datasets(task, cfg, "train")
    except (ValueError, OSError):
        train = None
    if train is None:
        return 100, "assumed (data not readable; pass --steps-per-epoch)"
    t = cfg.train
    if task == "fewshot" and cfg.model.method == "protonet":  # one episode per optimizer step
        return cfg.data.episodes_per_epoch, "episodes_per_epoch"
    batches = len(train) // t.batch_size or 1
    if t.max_steps_per_epoch:
        batches = min(batches, t.max_steps_per_epoch * t.accum_steps)
    return math.ceil(batches / t.accum_steps), f"from {len(train)} training samples"


# ----------------------------------------------------------------------------------------- browser


def _display(image: torch.Tensor) -> np.ndarray:
    from tasks.segmentation.overlay import to_display

    return to_display(image.detach().float().numpy())


def _grid(tiles: list[np.ndarray], titles: list[str], columns: int, path: str, row_titles=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(tiles) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (tile, title) in enumerate(zip(tiles, titles)):
        ax = axes.flat[i]
        ax.imshow(tile)
        ax.set_title(title, fontsize=8)
    for r, text in enumerate(row_titles or []):
        axes[r, 0].text(-0.1, 0.5, text, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def browse_dataset(task: str, cfg: Any, path: str, count: int = 16, split: str = "train") -> int:
    """Write a PNG grid of ``count`` samples as the task's dataset delivers them; returns tiles drawn.

    classification: image + class name; detection: image + ground-truth boxes; segmentation: image with
    the mask blended over it; fewshot: one episode, a row per class (support shots, then queries).
    """
    if task == "fewshot":
        return _browse_episode(cfg, path)
    from .inputs import task_datasets

    try:
        dataset = task_datasets(task, cfg, split)
    except (ValueError, OSError) as err:
        raise DeployError(f"cannot read the {split} data ({err}); set data.root=...") from None
    if dataset is None or len(dataset) == 0:
        raise DeployError(f"the {split} set is empty")
    tiles, titles = [], []
    # Evenly spaced over the dataset: datasets are often sorted by class.
    for index in np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int).tolist():
        sample = dataset[index]
        if task == "classification":
            image, label = sample
            tiles.append(_display(image))
            titles.append(dataset.classes[label] if hasattr(dataset, "classes") else str(label))
        elif task == "segmentation":
            from tasks.segmentation.overlay import blend

            tiles.append(blend(_display(sample["image"]), sample["mask"].numpy()))
            titles.append(f"classes {sorted(int(v) for v in sample['mask'].unique() if v != 255)}")
        else:
            from tasks.detection.visualize import draw_detections

            image, target = sample
            empty = torch.zeros(0)
            drawn = draw_detections(
                image, empty.reshape(0, 4), empty.long(), empty, ["bg"], gt_boxes=target["boxes"]
            )
            tiles.append(drawn.permute(1, 2, 0).numpy() if drawn.dtype == torch.uint8 else _display(drawn))
            titles.append(f"{len(target['boxes'])} boxes")
    _grid(tiles, titles, min(4, len(tiles)), path)
    return len(tiles)


def _browse_episode(cfg: Any, path: str) -> int:
    from tasks.fewshot.data import load_image
    from tasks.fewshot.episodes import EpisodeSpec, sample_episodes
    from tasks.fewshot.task import load_split_data

    data = cfg.data
    try:
        base = load_split_data(data).part("base")
    except (ValueError, OSError) as err:
        raise DeployError(f"cannot read the few-shot data ({err}); set data.root=...") from None
    spec = EpisodeSpec(min(data.n_way, 5), data.k_shot, min(data.q_query, 3), seed=data.val_seed)  # readable
    episode = sample_episodes(base, spec, 1)[0]
    samples = base.samples()
    per_class = spec.k_shot + spec.q_query
    tiles, titles = [], []
    for way in range(spec.n_way):
        ids = list(episode.support[way * spec.k_shot : (way + 1) * spec.k_shot])
        ids += list(episode.query[way * spec.q_query : (way + 1) * spec.q_query])
        for j, sample_id in enumerate(ids):
            image = load_image(samples[sample_id][0], 3)
            tiles.append(np.asarray(image))
            titles.append("support" if j < spec.k_shot else "query")
    row_titles = [base.class_names[c] for c in episode.classes]
    _grid(tiles, titles, per_class, path, row_titles)
    return len(tiles)
