"""K-fold cross-validation of a training config: `tools/train_cv.py CONFIG --folds K [key=value ...]`.

The folds are made once (seeded, by case or by image: `tasks.common.kfold`) and written to
`<output_dir>/splits.json`; fold i is an ordinary run of the task's Trainer in `<output_dir>/fold_<i>/`
with `data.num_folds=K data.fold=i data.splits_file=<output_dir>/splits.json`, so everything a run folder
offers (resume, --eval-only, the predict and export tools) works per fold. As nnU-Net does, each fold's
checkpoint is then evaluated on its validation fold (`eval.json`), and `cv_summary.json` reports those
metrics per fold, their mean and standard deviation, and metrics pooled over the validation items of all
folds (each item counted once). A rerun reuses splits.json, skips finished folds and resumes an
interrupted one from its last.pt.

A task takes part by implementing `FoldedTask` (classification and segmentation do).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from backbones.errors import UserError
from tasks.common.kfold import (
    FoldUnits,
    Splits,
    check_num_folds,
    check_splits,
    make_folds,
    read_splits,
    write_splits,
)

from .cli import UsageError, _setup_logging, exits_on_user_error, flag_overrides
from .config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    load_yaml_with_bases,
    parse_yaml,
)
from .registry import get_task, registered_tasks, task_accepting
from .run_folder import json_safe
from .task import Task
from .trainer import NonFiniteLossError, Trainer

log = logging.getLogger("tasks.engine")

SPLITS_FILE = "splits.json"
SUMMARY_FILE = "cv_summary.json"
DEFAULT_FOLDS = 5  # nnU-Net's
# Keys whose change does not change what a finished fold learnt (a rerun on another machine may differ).
IGNORED_KEYS = ("device", "train.num_workers", "train.log_every", "train.tensorboard", "train.plots")
# Keys this tool sets for every fold.
FOLD_KEYS = ("data.fold", "data.splits_file")


class CrossValidationError(UserError):
    """A config, a task or a cross-validation folder that tools/train_cv.py cannot work with."""


@runtime_checkable
class FoldedTask(Protocol):
    """What a Task implements to be cross-validated (its config's data section has num_folds, fold,
    splits_file and split_seed)."""

    def fold_units(self) -> FoldUnits:
        """The units the folds split (cases, images), from file names only: no image is opened."""
        ...

    def pooled_metrics(self, fold_dirs: Sequence[Path]) -> dict[str, float]:
        """Metrics over the validation items of all folds together, from what each fold's final
        evaluation wrote into its run folder."""
        ...


def fold_dir(root: str | Path, fold: int) -> Path:
    """The run folder of fold `fold` of the cross-validation in `root`."""
    return Path(root) / f"fold_{fold}"


# ------------------------------------------------------------------------------------------- splits


def prepare_splits(path: Path, units: FoldUnits, num_folds: int, seed: int) -> Splits:
    """The folds of `path` when it exists (checked against the data and settings), else new ones,
    written there: the folds are made once and every later run reuses them (nnU-Net's splits_final.json).
    """
    if path.is_file():
        splits = read_splits(path)
        check_splits(splits, units, num_folds, seed, path)
        log.info("%s: reusing %d folds of %d %ss", path, num_folds, len(units.ids), units.kind)
        return splits
    splits = make_folds(units, num_folds, seed)
    write_splits(path, splits)
    log.info("%s: %d folds of %d %ss (seed %d)", path, num_folds, len(units.ids), units.kind, seed)
    return splits


# -------------------------------------------------------------------------------------------- folds


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_changes(saved: dict, current: dict) -> list[str]:
    """`key old -> new` for every setting (but IGNORED_KEYS) in which two config dicts differ."""
    old, new = _flat(saved), _flat(current)
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if key not in IGNORED_KEYS and old.get(key) != new.get(key)
    ]


def _check_finished_fold(run_dir: Path, cfg: RunConfig, task_cls: type[Task]) -> None:
    """A finished fold is reused only if it was trained with this very config."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = config_to_dict(
        config_from_dict(task_cls.config_cls, task_cls.upgrade_config(parse_yaml(saved_file.read_text())))
    )
    changes = config_changes(saved, config_to_dict(cfg))
    if changes:
        raise CrossValidationError(
            f"{run_dir} finished with other settings than this run ({'; '.join(changes)}): rerun with the "
            f"settings it was trained with, use another --output-dir, or delete {run_dir} to retrain it"
        )


def run_fold(cfg: RunConfig, task_cls: type[Task]) -> bool:
    """Train one fold unless its run folder holds a finished run (summary.json); an interrupted one is
    resumed from its last.pt. Then evaluate its best.pt when it has no eval.json yet.

    Returns:
        Whether the fold was trained now.
    """
    run_dir = Path(cfg.output_dir)
    trained = not (run_dir / "summary.json").is_file()
    if trained:
        Trainer(cfg, task_cls(cfg), resume="auto").fit()
    else:
        _check_finished_fold(run_dir, cfg, task_cls)
        log.info("%s: finished earlier, skipped", run_dir)
    if trained or not (run_dir / "eval.json").is_file():
        # The fold's own final metrics: its best.pt (the ensemble's member) on its validation fold.
        Trainer(cfg, task_cls(cfg)).evaluate()
    return trained


# ------------------------------------------------------------------------------------------ summary


def fold_record(run_dir: Path, fold: int, splits: Splits) -> dict:
    """One fold's entry of cv_summary.json: its eval.json (its best.pt on its validation fold)."""
    path = run_dir / "eval.json"
    if not path.is_file():
        raise CrossValidationError(f"{path} is missing: the fold has not been evaluated")
    metrics = json.loads(path.read_text())
    return {
        "fold": fold,
        "run_dir": str(run_dir),
        "checkpoint": metrics.pop("weights", None),
        "best_epoch": json.loads((run_dir / "summary.json").read_text()).get("best_epoch"),
        f"val_{splits.kind}s": len(splits.folds[fold]),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of the finite values, as sklearn's cross_val_score
    users report `scores.mean()` and `scores.std()`."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite))


def summarize(root: Path, task: Task, splits: Splits, best_metric: str) -> dict:
    """cv_summary.json's content: per-fold metrics, their mean and std, and the pooled metrics."""
    dirs = [fold_dir(root, i) for i in range(splits.num_folds)]
    folds = [fold_record(run_dir, i, splits) for i, run_dir in enumerate(dirs)]
    names = list(folds[0]["metrics"])
    stats = {name: _stats([f["metrics"].get(name, math.nan) for f in folds]) for name in names}
    return {
        "task": task.name,
        "num_folds": splits.num_folds,
        "unit": splits.kind,
        "seed": splits.seed,
        "splits": str(root / SPLITS_FILE),
        "best_metric": best_metric,
        "fold_metrics": "each fold's checkpoints/best.pt evaluated on its validation fold (its eval.json)",
        "mean": {name: stats[name][0] for name in names},
        "std": {name: stats[name][1] for name in names},
        "pooled": task.pooled_metrics(dirs),
        "folds": folds,
    }


def table_rows(names: Sequence[str], best_metric: str) -> list[str]:
    """The metrics the printed table shows: the main one, the summary ones (no "/" in the name) and the
    per-class entries of the main one's family (`dice/<class>` for dice_mean); cv_summary.json has all."""
    family = best_metric.removesuffix("_mean") + "/"
    rows = [best_metric] if best_metric in names else []
    rows += [n for n in names if "/" not in n and n not in rows]
    return rows + [n for n in names if n.startswith(family) and n not in rows]


def format_table(summary: dict) -> str:
    """mean, std, pooled and per-fold values of `table_rows`, one metric per line."""
    folds = summary["folds"]
    names = table_rows(list(summary["mean"]), summary["best_metric"])
    header = ["metric", "mean", "std", "pooled", *[f"fold {f['fold']}" for f in folds]]

    def cell(value: float | None) -> str:
        return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"

    lines = [header]
    for name in names:
        values = [summary["mean"][name], summary["std"][name], summary["pooled"].get(name)]
        lines.append([name, *map(cell, values), *[cell(f["metrics"].get(name)) for f in folds]])
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in lines)


# --------------------------------------------------------------------------------------------- tool


def _task_class(config: str, overrides: list[str], name: str) -> type[Task]:
    if name != "auto":
        return get_task(name)
    return task_accepting(apply_overrides(load_yaml_with_bases(config), overrides), config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config of a classification or segmentation run")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=20 data.root=DIR")
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        help=f"number of folds (default: data.num_folds, else {DEFAULT_FOLDS})",
    )
    parser.add_argument(
        "--task", default="auto", help="task of the config (default: the one whose schema accepts it)"
    )
    parser.add_argument("--output-dir", default=None, help="cross-validation folder (overrides output_dir)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides device)")
    return parser


def _check_overrides(overrides: list[str]) -> None:
    fixed = [item for item in overrides if item.split("=", 1)[0].strip() in FOLD_KEYS]
    if fixed:
        raise UsageError(f"{fixed}: tools/train_cv.py sets {', '.join(FOLD_KEYS)} for every fold itself")


def _folded_task(config: str, overrides: list[str], task_name: str) -> tuple[type[Task], RunConfig, Task]:
    """The config's task class, config and task; refused unless the task implements `FoldedTask`."""
    task_cls = _task_class(config, overrides, task_name)
    cfg = load_config(config, overrides, task_cls.config_cls)
    task = task_cls(cfg)
    if not isinstance(task, FoldedTask):
        folded = sorted(name for name, cls in registered_tasks().items() if issubclass(cls, FoldedTask))
        raise CrossValidationError(
            f"{config} is a {task_cls.name} config: tools/train_cv.py cross-validates "
            f"{' and '.join(folded)} runs only (their data has images or cases to split into folds)"
        )
    return task_cls, cfg, task


def _num_folds(folds: int | None, cfg: RunConfig) -> tuple[int, str]:
    """The number of folds (--folds, else data.num_folds, else DEFAULT_FOLDS) and how it was given."""
    if folds is not None:
        return folds, f"--folds {folds}"
    if cfg.data.num_folds:
        return cfg.data.num_folds, f"data.num_folds={cfg.data.num_folds}"
    return DEFAULT_FOLDS, f"--folds {DEFAULT_FOLDS} (the default)"


def fold_config(
    config: str, overrides: list[str], config_cls: type, root: Path, num_folds: int, fold: int
) -> RunConfig:
    """The run config of one fold: the user's, validating on fold `fold` of root/splits.json."""
    fold_keys = [
        f"data.num_folds={num_folds}",
        f"data.fold={fold}",
        f"data.splits_file={root / SPLITS_FILE}",
        f"output_dir={fold_dir(root, fold)}",
    ]
    return load_config(config, [*overrides, *fold_keys], config_cls)


def cross_validate(
    config: str, overrides: Sequence[str] = (), folds: int | None = None, task_name: str = "auto"
) -> dict:
    """Train every fold of `config` (skipping finished ones), then write and return cv_summary.json.

    Raises:
        CrossValidationError: the config's task has no k-fold split, or a finished fold's settings differ.
        FoldError: bad --folds, or a splits.json that does not fit the data (`tasks.common.kfold`).
    """
    overrides = list(overrides)
    _check_overrides(overrides)
    if folds is not None:
        check_num_folds(folds, setting=f"--folds {folds}")
    task_cls, cfg, task = _folded_task(config, overrides, task_name)
    num_folds, setting = _num_folds(folds, cfg)
    units = task.fold_units()
    check_num_folds(num_folds, units, setting)
    root = Path(cfg.output_dir)
    splits = prepare_splits(root / SPLITS_FILE, units, num_folds, cfg.data.split_seed)
    for i in range(num_folds):
        log.info(
            "fold %d/%d: %d val %s(s) -> %s",
            i + 1,
            num_folds,
            len(splits.folds[i]),
            units.kind,
            fold_dir(root, i),
        )
        run_fold(fold_config(config, overrides, task_cls.config_cls, root, num_folds, i), task_cls)
    summary = summarize(root, task, splits, cfg.train.best_metric or task_cls.default_best_metric)
    (root / SUMMARY_FILE).write_text(json.dumps(json_safe(summary), indent=2))
    return summary


@exits_on_user_error
def run_cross_validation_tool(argv: list[str] | None = None) -> int:
    """tools/train_cv.py: parse, cross-validate, print the table.

    Returns:
        0 done, 2 bad input, 3 a fold's loss became NaN/Inf (the folds before it are kept).
    """
    args = build_parser().parse_intermixed_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(
            "tools/train_cv.py runs in one process (no torchrun); its folds train one after another"
        )
    _setup_logging()
    overrides = flag_overrides(args)
    try:
        summary = cross_validate(args.config, overrides, args.folds, args.task)
    except NonFiniteLossError as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    unit = summary["unit"]
    print(
        f"{summary['num_folds']}-fold cross-validation by {unit}: fold i = its best.pt on its validation "
        f"fold; pooled = every validation {unit} of all folds together\n{format_table(summary)}\n"
        f"-> {Path(summary['splits']).parent / SUMMARY_FILE}"
    )
    return 0
