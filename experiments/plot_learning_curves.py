"""Learning curves against CPU minutes: a validation metric of several run folders on one plot.

    python experiments/plot_learning_curves.py --metric top1 --out docs/curves_hymenoptera.png \
        --budget 10 "shipped=runs/sweep_cls/A_shipped" "60 epochs=runs/sweep_cls/B_e60"

Every training tool logs `cpu_time_s` (training and evaluation CPU time so far, data-loader workers
included) in each epoch record of its run folder's `metrics.jsonl`; this plots `val/<metric>` against it,
so that a CPU budget is spent where a curve still climbs. `--budget` draws the budget as a vertical line.
"""

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from tasks.engine.monitor import read_metrics


def epoch_curve(run_dir: Path, metric: str) -> tuple[list[float], list[float]]:
    """(CPU minutes, val/<metric>) of every evaluated epoch of one run folder."""
    path = run_dir / "metrics.jsonl"
    rows = read_metrics(run_dir)
    if not rows:
        raise SystemExit(f"{path}: no records (is {run_dir} a run folder?)")
    key = f"val/{metric}"
    points = [(r["cpu_time_s"] / 60, r[key]) for r in rows if r.get("kind") == "epoch" and key in r]
    if not points:
        raise SystemExit(f"{path}: no epoch record with both cpu_time_s and {key}")
    minutes, values = zip(*points)
    return list(minutes), list(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, one per curve")
    p.add_argument("--metric", required=True, help="the validation metric, without val/ (top1, AP, dice)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--budget", type=float, default=0.0, help="CPU budget in minutes (a vertical line)")
    p.add_argument("--title", default="")
    args = p.parse_args()
    fig = Figure(figsize=(6.4, 4), dpi=100)
    ax = fig.subplots()
    for spec in args.runs:
        label, sep, folder = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: expected LABEL=RUN_DIR")
        ax.plot(*epoch_curve(Path(folder), args.metric), label=label)
    if args.budget:
        ax.axvline(args.budget, color="grey", linestyle="--", label=f"budget {args.budget:g} CPU-min")
    ax.set_xlabel("training CPU minutes (all cores, workers included)")
    ax.set_ylabel(f"val/{args.metric}")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
