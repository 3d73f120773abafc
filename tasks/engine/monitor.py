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


class RunLogger:
    """Append metrics to `metrics.jsonl`, mirror them to TensorBoard and redraw the PNG plots.

    Only rank 0 creates one of these.
    """

    def __init__(self, run_dir: Path, main_metric: str, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.main_metric = main_metric
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self.writer = None  # optional: the tensorboard package is not installed

    def history(self) -> list[dict]:
        """All records in metrics.jsonl (a resumed run appends to the same file)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def write(self, record: dict, step: int) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _json_safe(v) for k, v in record.items()}) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def plot(self) -> None:
        """Redraw loss.png, lr.png and <main metric>.png from the whole history."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.history() if r.get("kind") == "epoch"]
        steps = [r for r in self.history() if r.get("kind") == "step"]
        if not rows:
            return
        panels = {
            "loss": [("train/loss", "train"), ("val/loss", "val")],
            "lr": [("lr", "lr")],
            self.main_metric.replace("/", "_"): [(f"val/{self.main_metric}", self.main_metric)],
        }
        for name, series in panels.items():
            fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
            drawn = False
            source = steps if name == "lr" and steps else rows
            xkey = "step" if source is steps else "epoch"
            for key, label in series:
                points = [(r[xkey], r[key]) for r in source if isinstance(r.get(key), (int, float))]
                if points:
                    ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
                    drawn = True
            if drawn:
                ax.set_xlabel(xkey)
                ax.set_title(name)
                ax.grid(alpha=0.3)
                ax.legend()
                fig.tight_layout()
                fig.savefig(self.run_dir / f"{name}.png")
            plt.close(fig)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
