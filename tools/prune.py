"""Structured channel pruning of a trained classifier, then fine-tuning with the normal training loop.

python tools/prune.py runs/cls/checkpoints/best.pt --keep 0.8 --out runs/cls/pruned.pt
python tools/prune.py finetune configs/classification/x.yaml --weights runs/cls/pruned.pt train.epochs=5

The first form prints parameters, MACs, speed and validation top-1 before and after pruning and writes a
checkpoint with the pruned widths. `train_cls.py --weights pruned.pt` fine-tunes it (the engine resizes
the configured layers); `finetune` is train_cls.py with the pruned widths built into the task, so that
`--resume` of the fine-tuning run works too.
"""

from __future__ import annotations

import argparse
import sys

import torch

from backbones.complexity import count_parameters
from benchmarks.timing import time_rounds
from tasks.deploy.analysis import count_macs
from tasks.deploy.inputs import real_samples
from tasks.deploy.loading import load_classifier
from tasks.deploy.prune import channel_widths, prune_channels
from tasks.engine.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from tasks.engine.cli import UsageError, exits_on_user_error


def _finetune(argv: list[str]) -> int:
    """The training tool of the pruned checkpoint's task, with the pruned widths built into the task."""
    from tasks.deploy.finetune import pruned_task_class
    from tasks.engine import run_training_tool
    from tasks.engine.cli import build_parser

    args = build_parser().parse_args(argv)
    if not args.weights:
        raise UsageError("finetune needs --weights PRUNED.pt (written by tools/prune.py)")
    task_cls = pruned_task_class(args.weights)
    return run_training_tool(
        task_cls, task_cls.config_cls, argv, description=f"fine-tune a pruned {task_cls.name} model"
    )


@torch.inference_mode()
def _accuracy(model, images, labels, batch_size=32) -> float:
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(torch.stack(images[i : i + batch_size]))
        correct += int((logits.argmax(1) == torch.tensor(labels[i : i + batch_size])).sum())
    return correct / len(images)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["finetune"]:
        return _finetune(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="checkpoint of tools/train_cls.py")
    parser.add_argument(
        "overrides", nargs="*", help="data.* overrides of the saved config, e.g. data.root=DIR"
    )
    parser.add_argument("--keep", type=float, default=0.8, help="fraction of channels to keep")
    parser.add_argument("--out", required=True, help="pruned checkpoint to write")
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    trained = load_classifier(args.checkpoint, args.overrides, "pruning")
    images, labels = real_samples(trained.task, args.val_images, "val")
    pruned = prune_channels(trained.model, args.keep, images[0][None])
    batch = torch.stack(images[:16])
    with torch.inference_mode():
        times = time_rounds(
            {"before": lambda: trained.model(batch), "after": lambda: pruned(batch)}, args.repeats
        )
    example = images[0][None]
    print(f"keep ratio {args.keep}; {len(images)} validation images; batch {len(batch)} for speed")
    print(f"{'':<8}{'params':>12}{'MMACs':>10}{'ms/batch':>10}{'top-1':>8}")
    for name, model in (("before", trained.model), ("after", pruned)):
        seconds = times.median(name)
        row = f"{name:<8}{count_parameters(model):>12,}{count_macs(model, example) / 1e6:>10.1f}"
        print(f"{row}{seconds * 1e3:>10.1f}{_accuracy(model, images, labels) * 100:>7.1f}%")
    source = load_checkpoint(args.checkpoint)
    save_checkpoint(
        {
            "model": pruned.state_dict(),
            "config": source["config"],
            # What the loader needs to rebuild it from the file alone: the task and its class order.
            "task": {"name": trained.task.name, "version": CHECKPOINT_VERSION},
            "task_meta": trained.meta,
            "pruned": True,
            "keep_ratio": args.keep,
            "channel_widths": channel_widths(pruned),
        },
        args.out,
    )
    print(f"wrote {args.out}; fine-tune: python tools/prune.py finetune CONFIG --weights {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
