"""The run folder's own rules: one run per folder, and a history that matches the checkpoint.

A folder that already holds a run is never reused silently (a second run would replace `best.pt` and mix
two runs in `metrics.jsonl`): the user continues it with `--resume` or replaces it with `--overwrite`,
as detectron2's `--resume` and mmdet's `--resume`/new `work_dir` users expect.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from .config import ConfigError

# What the Trainer writes into a run folder; `--overwrite` removes exactly these (task outputs such as
# predictions.csv are rewritten by the new run's first evaluation, and nothing else is touched).
RUN_FILES = (
    "checkpoints",
    "metrics.jsonl",
    "summary.json",
    "config.yaml",
    "curves.png",
    "tensorboard",
    "eval.json",
    "weights_report.json",
)
MARKERS = ("checkpoints/last.pt", "metrics.jsonl", "summary.json")


class RunFolderError(ConfigError):
    """The output folder holds a run and the command did not say whether to continue or replace it."""


def describe_run(run_dir: str | Path) -> str | None:
    """A short description of the run held by `run_dir` ("3 epochs, last.pt at step 60"), or None."""
    run_dir = Path(run_dir)
    found = [name for name in MARKERS if (run_dir / name).exists()]
    if not found:
        return None
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            done = json.loads(summary.read_text()).get("epochs_completed")
            return f"a finished run ({done} epochs, summary.json)"
        except (json.JSONDecodeError, AttributeError):
            pass
    return f"a run ({', '.join(found)})"


def check_run_folder(run_dir: str | Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one, unless resuming or told to overwrite.

    Raises:
        RunFolderError: naming the folder, what it holds and the three ways on.
    """
    if resuming or overwrite:
        return
    held = describe_run(run_dir)
    if held is not None:
        raise RunFolderError(
            f"output folder {run_dir} already holds {held}. Pass --resume to continue it, --overwrite "
            "to replace it, or --output-dir DIR (output_dir=DIR) to start a new run elsewhere"
        )


def clear_run(run_dir: str | Path) -> list[Path]:
    """Delete what an earlier run wrote (RUN_FILES) from `run_dir`; returns the removed paths."""
    removed = []
    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def truncate_history(path: str | Path, step: int) -> int:
    """Drop the records of `metrics.jsonl` logged after optimizer step `step` (a resumed run replays them).

    Returns:
        The number of records removed. The file is rewritten atomically.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if int(json.loads(line).get("step", 0)) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return len(lines) - len(kept)


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN as None, for the JSON files of a run folder (strict JSON has no NaN)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj
