"""Few-shot evaluation of a tools/train_fewshot.py checkpoint: seeded episodes, or one fixed task.

Episodes (mean accuracy and 95% interval over held-out classes; the episodes are saved and replayable):
    python tools/eval_fewshot.py --checkpoint runs/fewshot/omniglot_baseline/checkpoints/best.pt \
        --method simpleshot,protonet --n-way 5 --k-shot 1 --episodes 600 --output-dir runs/fewshot/eval
Fixed task (support/<class>/*.png, query/*.png or query/<class>/*.png) -> predictions.csv:
    python tools/eval_fewshot.py --checkpoint CKPT --method baseline++ \
        --support DIR --query DIR --output-dir OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tasks.common.tta import add_tta_argument, tta_from_cli
from tasks.engine.cli import UsageError, exits_on_user_error
from tasks.engine.monitor import progress, use_progress_bars
from tasks.fewshot.episodes import EpisodeSpec
from tasks.fewshot.methods import METHODS, FinetuneSettings, build_method
from tasks.fewshot.model import with_views
from tasks.fewshot.predict import (
    base_feature_mean,
    load_trained_net,
    run_episodes,
    run_fixed_task,
    write_json,
)
from tasks.fewshot.task import load_split_data


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint written by tools/train_fewshot.py")
    p.add_argument("--method", default="simpleshot", help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--output-dir", default="runs/fewshot/eval")
    p.add_argument("--data", default=None, help="dataset root (default: the checkpoint config's data.root)")
    p.add_argument("--split", default="novel", choices=["base", "val", "novel", "all"])
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=1)
    p.add_argument("--q-query", type=int, default=15)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--same-group", action="store_true", help="all classes of an episode from one group")
    p.add_argument("--episodes-file", default=None, help="replay these saved episodes (OUT/episodes.json)")
    p.add_argument("--support", default=None, help="fixed-task mode: support/<class>/<images>")
    p.add_argument("--query", default=None, help="fixed-task mode: query/<images> or query/<class>/<images>")
    p.add_argument("--frozen-stages", type=int, default=3, help="Baseline(++): 4 = train the head only")
    p.add_argument("--finetune-epochs", type=int, default=100, help="passes over the support set")
    p.add_argument("--device", default="cpu")
    add_tta_argument(p)
    return p


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UsageError(f"--method {args.method!r}: expected names from {list(METHODS)}")
    if (args.support is None) != (args.query is None):
        raise UsageError("fixed-task mode needs both --support DIR and --query DIR")
    finetune = FinetuneSettings(frozen_stages=args.frozen_stages, epochs=args.finetune_epochs, seed=args.seed)
    net, cfg = load_trained_net(args.checkpoint, args.device)
    tta = tta_from_cli(args.tta, cfg.eval.tta)
    # Which methods fine-tune comes from the methods themselves (a cheap build: no training happens).
    fine_tuned = [m for m in methods if not build_method(m, net, finetune=finetune).uses_frozen_features]
    if tta and fine_tuned:
        raise UsageError(
            f"--method {fine_tuned[0]} with --frozen-stages {args.frozen_stages} fine-tunes the backbone, "
            f"which the test-time views of {'--tta' if args.tta else 'its eval.tta'} ({', '.join(tta)}) "
            "cannot follow: add --frozen-stages 4 or --tta none"
        )
    net = with_views(net, tta)
    if args.data:
        cfg.data.root = args.data
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.support is not None:
        if len(methods) != 1:
            raise UsageError("fixed-task mode takes one --method")
        base_mean = None
        if methods[0] == "simpleshot" and Path(cfg.data.root).is_dir():
            base_mean = base_feature_mean(net, cfg, load_split_data(cfg.data))
        result = run_fixed_task(
            net,
            cfg,
            methods[0],
            args.support,
            args.query,
            out / "predictions.csv",
            finetune=finetune,
            base_mean=base_mean,
        )
        result["centred_on_base_mean"] = base_mean is not None
    else:
        spec = EpisodeSpec(args.n_way, args.k_shot, args.q_query, args.seed, args.same_group)
        result = run_episodes(
            net,
            cfg,
            load_split_data(cfg.data),
            methods,
            spec,
            args.episodes,
            part=args.split,
            replay_file=args.episodes_file,
            save_file=out / "episodes.json",
            finetune=finetune,
            progress=lambda items: progress(items, len(items), "episodes", use_progress_bars()),
        )
    result["checkpoint"] = str(args.checkpoint)
    result["tta"] = tta
    result["threads"] = torch.get_num_threads()
    write_json(out / "results.json", result)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
