"""Omniglot held-out protocol: one whole alphabet never seen in training, 20-way 1-shot runs within it.

    python experiments/omniglot_protocol.py make --root ../shared/data/omniglot/images_background_small1
    python experiments/omniglot_protocol.py score --checkpoint runs/fewshot/omniglot_small/checkpoints/last.pt

An inner split for choosing settings, inside the base alphabets (the held-out one left out entirely):
    python experiments/omniglot_protocol.py make --out runs/omniglot_inner --held-out Greek --exclude Korean

`make` writes, under --out (default runs/omniglot_protocol):
- split.json: base = every character of the other alphabets, val = none, novel = the held-out alphabet
  (train with `data.split_file=<out>/split.json`, so no held-out character is ever trained on);
- runNN/support/<character>/ (one drawing) and runNN/query/<character>/ (--queries other drawings) for
  --runs runs of --n-way characters drawn from the held-out alphabet, seeded: the layout of the fixed-task
  mode of tools/eval_fewshot.py, as a user would hand in a task. Files are symlinks into --root.

`score` runs `tools/eval_fewshot.py --support ... --query ...` on every run (exactly as a user would) and
prints the mean accuracy over runs with its 95% interval (1.96 x std / sqrt(runs)); --json writes it.
Lake et al.'s 20 official runs are 20-way 1-shot within an alphabet of the evaluation set, which these
machines do not have; this is the same protocol on an alphabet of `images_background_small1`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

from tasks.fewshot.data import scan_class_folders
from tasks.fewshot.splits import save_split
from tools import eval_fewshot


def make(
    root: Path,
    out: Path,
    held_out: str,
    runs: int,
    n_way: int,
    queries: int,
    seed: int,
    exclude: tuple[str, ...] = (),
) -> None:
    """Write split.json and the fixed-task folders of every run (see the module docstring); the
    characters of the `exclude` alphabets are in neither part."""
    index = scan_class_folders(root)
    novel = [c for c, g in zip(index.class_names, index.groups) if g == held_out]
    if len(novel) < n_way:
        raise SystemExit(f"{root}/{held_out}: {len(novel)} characters, a {n_way}-way run needs {n_way}")
    base = [c for c, g in zip(index.class_names, index.groups) if g != held_out and g not in exclude]
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "protocol": "whole alphabet held out",
        "held_out": held_out,
        "excluded": list(exclude),
        "root": str(root),
    }
    save_split(out / "split.json", {"base": base, "val": [], "novel": novel}, meta)
    files = dict(zip(index.class_names, index.files))
    rng = random.Random(seed)
    for run in range(1, runs + 1):
        for character in sorted(rng.sample(novel, n_way)):
            drawings = rng.sample(files[character], 1 + queries)
            for part, chosen in (("support", drawings[:1]), ("query", drawings[1:])):
                folder = out / f"run{run:02d}" / part / character.replace("/", "_")
                folder.mkdir(parents=True, exist_ok=True)
                for name in chosen:
                    link = folder / Path(name).name
                    link.unlink(missing_ok=True)
                    link.symlink_to((root / name).resolve())
    print(f"{out}: split.json ({len(base)} base / {len(novel)} novel characters), {runs} runs")


def score(checkpoint: str, out: Path, method: str, extra: list[str]) -> dict:
    """Accuracy of ``method`` on every run folder under ``out``: per run, mean and 95% interval."""
    accuracies = []
    for run in sorted(p for p in out.glob("run*") if p.is_dir()):
        result_dir = out / "results" / Path(checkpoint).parent.parent.name / run.name
        args = ["--checkpoint", checkpoint, "--method", method, "--support", str(run / "support")]
        args += ["--query", str(run / "query"), "--output-dir", str(result_dir), *extra]
        if eval_fewshot.main(args) != 0:
            raise SystemExit(f"tools/eval_fewshot.py failed on {run}")
        results = json.loads((result_dir / "results.json").read_text())
        accuracies.append(results["accuracy"])
    mean = statistics.mean(accuracies)
    ci95 = 1.96 * statistics.stdev(accuracies) / math.sqrt(len(accuracies)) if len(accuracies) > 1 else 0.0
    summary = {"checkpoint": checkpoint, "method": method, "runs": accuracies, "mean": mean, "ci95": ci95}
    print(f"{method}: {100 * mean:.2f} +- {100 * ci95:.2f} % over {len(accuracies)} runs")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["make", "score"])
    parser.add_argument("--out", type=Path, default=Path("runs/omniglot_protocol"))
    parser.add_argument("--root", type=Path, default=Path("../shared/data/omniglot/images_background_small1"))
    parser.add_argument("--held-out", default="Korean", help="the alphabet kept out of training")
    parser.add_argument(
        "--exclude", action="append", default=[], help="make: an alphabet in neither part (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--n-way", type=int, default=20)
    parser.add_argument("--queries", type=int, default=5, help="query drawings per character and run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="score: a tools/train_fewshot.py checkpoint")
    parser.add_argument("--method", default="simpleshot", help="score: the evaluation method")
    parser.add_argument("--json", type=Path, help="score: write the summary here")
    args, extra = parser.parse_known_args(argv)
    if args.command == "make":
        make(
            args.root,
            args.out,
            args.held_out,
            args.runs,
            args.n_way,
            args.queries,
            args.seed,
            tuple(args.exclude),
        )
        return 0
    if not args.checkpoint:
        parser.error("score needs --checkpoint")
    summary = score(args.checkpoint, args.out, args.method, extra)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
