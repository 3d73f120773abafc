"""Run-folder logging: metrics.jsonl, PNG plots, optional TensorBoard, progress bars or line logs."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("tasks.engine")


def use_progress_bars() -> bool:
    """Progress bars only on an interactive terminal; logs piped to files get plain lines."""
    return sys.stderr.isatty()


def progress(iterable, total: int | None, desc: str, enabled: bool):
    """A tqdm bar when `enabled`, else the iterable unchanged."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(run_dir: Path) -> list[dict]:
    """All records of a run folder's metrics.jsonl ([] when it has none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    """Append metrics to `metrics.jsonl`, mirror them to TensorBoard and redraw the PNG plots.

    Only rank 0 creates one of these. `purge_step` (a resumed run's step) makes TensorBoard drop the
    events logged after it, which the resumed run writes again.
    """

    def __init__(
        self, run_dir: Path, main_metric: str, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.main_metric = main_metric
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step)
            except (ImportError, ModuleNotFoundError):
                self.writer = None  # optional: the tensorboard package is not installed

    def history(self) -> list[dict]:
        """All records in metrics.jsonl (a resumed run appends to the same file)."""
        return read_metrics(self.run_dir)

    def write(self, record: dict, step: int) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def plot(self) -> None:
        """Redraw `curves.png`: loss (train/val), learning rate and the main metric, from the whole history.

        Uses matplotlib's object API (no pyplot): no GUI backend, no global figure state, and much faster
        to import inside a training process.
        """
        from matplotlib.figure import Figure

        history = self.history()
        rows = [r for r in history if r.get("kind") == "epoch"]
        steps = [r for r in history if r.get("kind") == "step"]
        if not rows:
            return
        panels = [
            ("loss", rows, "epoch", [("train/loss", "train"), ("val/loss", "val")]),
            ("learning rate", steps or rows, "step" if steps else "epoch", [("lr", "lr")]),
            (self.main_metric, rows, "epoch", [(f"val/{self.main_metric}", "val")]),
        ]
        fig = Figure(figsize=(13, 3.4), dpi=90)
        axes = fig.subplots(1, 3)
        for ax, (title, source, xkey, series) in zip(axes, panels):
            for key, label in series:
                points = [(r[xkey], r[key]) for r in source if isinstance(r.get(key), (int, float))]
                if points:
                    ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
                    ax.legend()
            ax.set_xlabel(xkey)
            ax.set_title(title)
            ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.05, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
        fig.savefig(self.run_dir / "curves.png")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
