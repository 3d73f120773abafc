"""`make demo`: every training tool, briefly, on synthetic shapes; one table at the end.

    python tools/demo.py                 # about 4 minutes on 2 CPU cores
    python tools/demo.py --quick         # the short version the test suite runs
    python tools/demo.py --tasks cls,seg # a subset
    python tools/demo.py train.amp=off   # key=value overrides for every task's config (here: fp32)

Steps: tools/make_shapes.py writes the four datasets under runs/demo/data, then tools/train_cls.py,
train_det.py, train_seg.py and train_fewshot.py (+ eval_fewshot.py on held-out classes) run with the configs
in configs/demo/. The table lists each task's main metric next to its chance level.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from tasks.shapes import make_all
from tools import eval_fewshot, train_cls, train_det, train_fewshot, train_seg

# Relative: the loader falls back to the shipped copies when the working directory has no configs/.
CONFIGS = Path("configs", "demo")
# Quick mode: fewer epochs/steps; the metrics are still expected to beat chance clearly (a test checks).
QUICK_OVERRIDES = {
    "cls": ["train.epochs=3"],
    "det": ["train.epochs=4"],
    "seg": ["train.epochs=12"],
    "fewshot": ["train.epochs=1"],
}
QUICK_DATA_SCALE = 1.0  # same data as the full demo: fewer images made the short runs unreliable
TASKS = ("cls", "det", "seg", "fewshot")


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _last_eval(run_dir: Path) -> dict:
    """Metrics of the last evaluation in the run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    evaluated = [r for r in records if any(key.startswith("val/") for key in r)]
    return evaluated[-1] if evaluated else {}


def _train(tool, name: str, data: Path, out: Path, extra: list[str]) -> tuple[int, Path]:
    """Run one training tool with its demo config; returns its exit code and run folder."""
    run = out / name
    args = [str(CONFIGS / f"{name}.yaml"), f"data.root={data}", *extra, "--output-dir", str(run)]
    code = tool.main([*args, "--overwrite"])
    return code, run


def run_classification(data: Path, out: Path, extra: list[str]) -> dict:
    code, run = _train(train_cls, "classification", data, out, extra)
    summary = _summary(run) if code == 0 else {}
    return {
        "metric": "val top-1",
        "value": summary.get("best_value"),
        "chance": 1 / 3,
        "run": run,
        "code": code,
    }


def run_detection(data: Path, out: Path, extra: list[str]) -> dict:
    code, run = _train(train_det, "detection", data, out, extra)
    ap50 = _last_eval(run).get("val/AP50") if code == 0 else None
    return {"metric": "val AP50 (COCO, last epoch)", "value": ap50, "chance": 0.0, "run": run, "code": code}


def run_segmentation(data: Path, out: Path, extra: list[str]) -> dict:
    code, run = _train(train_seg, "segmentation", data, out, extra)
    summary = _summary(run) if code == 0 else {}
    # dice_mean averages the three shape classes (background excluded). Predicting background everywhere
    # scores 0; finding every shape but guessing its class at random scores about 1/3.
    return {
        "metric": "val Dice (mean of 3 shape classes)",
        "value": summary.get("best_value"),
        "chance": 1 / 3,
        "run": run,
        "code": code,
    }


def run_fewshot(data: Path, out: Path, extra: list[str], episodes: int) -> dict:
    code, run = _train(train_fewshot, "fewshot", data, out, extra)
    value = None
    if code == 0:
        checkpoint = run / "checkpoints" / "last.pt"
        code = eval_fewshot.main(
            [
                "--checkpoint",
                str(checkpoint),
                "--method",
                "simpleshot",
                "--n-way",
                "5",
                "--k-shot",
                "1",
                "--q-query",
                "5",
                "--episodes",
                str(episodes),
                "--output-dir",
                str(run / "eval_5w1s"),
            ]
        )
        if code == 0:
            value = json.loads((run / "eval_5w1s" / "results.json").read_text())["methods"]["simpleshot"][
                "accuracy"
            ]
    return {
        "metric": f"5-way 1-shot acc, {episodes} episodes",
        "value": value,
        "chance": 0.2,
        "run": run,
        "code": code,
    }


def format_table(rows: dict[str, dict]) -> str:
    """The closing table: task, metric, value, chance, time, run folder."""
    lines = [f"{'task':<9}{'metric':<36}{'value':>8}{'chance':>8}{'time':>8}  run folder"]
    for task, row in rows.items():
        value = "FAILED" if row["value"] is None else f"{row['value']:.3f}"
        lines.append(
            f"{task:<9}{row['metric']:<36}{value:>8}{row['chance']:>8.2f}{row['time_s']:>7.0f}s  {row['run']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="runs/demo", help="data and run folders go here")
    parser.add_argument("--quick", action="store_true", help="the short version (fewer epochs)")
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides applied to every task's config (e.g. train.seed=1)"
    )
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; expected names from {list(TASKS)}")
    out = Path(args.output_dir)
    data_root = out / "data"
    scale = QUICK_DATA_SCALE if args.quick else 1.0
    marker = data_root / ".complete"
    if not marker.exists() or marker.read_text() != f"scale={scale}\n":
        print(f"writing synthetic shapes data to {data_root}")
        shutil.rmtree(data_root, ignore_errors=True)
        make_all(data_root, scale=scale)
        marker.write_text(f"scale={scale}\n")
    runners = {
        "cls": lambda extra: run_classification(data_root / "classification", out, extra),
        "det": lambda extra: run_detection(data_root / "detection", out, extra),
        "seg": lambda extra: run_segmentation(data_root / "segmentation", out, extra),
        "fewshot": lambda extra: run_fewshot(data_root / "fewshot", out, extra, 100 if args.quick else 600),
    }
    rows = {}
    for task in tasks:
        print(f"\n=== {task} ===", flush=True)
        start = time.perf_counter()
        rows[task] = runners[task]((QUICK_OVERRIDES[task] if args.quick else []) + args.overrides)
        rows[task]["time_s"] = time.perf_counter() - start
    print("\n" + format_table(rows))
    (out / "demo_summary.json").write_text(
        json.dumps(
            {
                task: {k: (str(v) if isinstance(v, Path) else v) for k, v in row.items()}
                for task, row in rows.items()
            },
            indent=2,
        )
    )
    return 0 if all(row["code"] == 0 and row["value"] is not None for row in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
