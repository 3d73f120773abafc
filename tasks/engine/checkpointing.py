"""Which checkpoint files a run keeps (last, best, top-k), in which order it writes them, and early stop.

The Trainer decides *when* to save; `CheckpointKeeper` decides *what*: it tracks the best value and the
top-k list inside the loop state (so they survive a resume) and writes the files in an order that a kill
at any point leaves consistent.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import remove_stale_temp_files, save_checkpoint

log = logging.getLogger("tasks.engine")


@dataclass
class LoopState:
    """Where the loop stands; saved in every checkpoint as the plain dict `to_dict()` returns."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed (mid-epoch checkpoints)
    global_step: int = 0  # optimizer updates so far
    best: float | None = None
    best_epoch: int = -1
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    top_k: list = field(default_factory=list)  # [[value, file name], ...], best first
    loss_sum: float = 0.0  # running train loss of the current epoch (a mid-epoch resume keeps it)
    loss_count: int = 0
    cpu_s: float = 0.0  # CPU seconds spent training so far, over resumes (runtime.cpu_seconds)
    planned_epochs: int = 0  # the run's length as train.cpu_minutes fixed it; 0 = train.epochs
    length_reviewed: bool = False  # train.cpu_minutes has reviewed planned_epochs (it does so once)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class CheckpointKeeper:
    """best.pt, top-k epochNNNN.pt and last.pt of one run folder.

    Args:
        folder: the run's checkpoints/ folder.
        best_mode: "max" or "min" for the metric that picks best.pt.
        keep_top_k: how many epoch files to keep (0: none).
        is_main: only the main process writes or deletes files.
    """

    def __init__(self, folder: Path, best_mode: str, keep_top_k: int, is_main: bool) -> None:
        self.folder = Path(folder)
        self.best_mode = best_mode
        self.keep_top_k = keep_top_k
        self.is_main = is_main
        self._extra: list[str] = []
        self._stale: list[str] = []

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.best_mode == "max" else value < best

    def record(self, loop: LoopState, value: float) -> bool:
        """Account for an evaluation of the epoch `loop.epoch` just finished; True if it is the best."""
        is_best = self.improved(value, loop.best)
        if is_best:
            loop.best, loop.best_epoch, loop.bad_evals = value, loop.epoch, 0
            self._extra.append("best.pt")
        else:
            loop.bad_evals += 1
        if self.keep_top_k > 0:
            name = f"epoch{loop.epoch:04d}.pt"
            entries = sorted(
                [*loop.top_k, [value, name]], key=lambda e: e[0], reverse=self.best_mode == "max"
            )
            loop.top_k = entries[: self.keep_top_k]
            if any(n == name for _, n in loop.top_k):
                self._extra.append(name)
            self._stale += [old for _, old in entries[self.keep_top_k :] if old != name]
        return is_best

    def write(self, checkpoint: dict) -> None:
        """Write the pending best/top-k copies, then last.pt, then delete the files that fell out.

        last.pt is the commit point: it is written after the copies its loop state refers to and before
        the files it no longer lists are removed, so a kill between any two writes leaves a folder whose
        last.pt agrees with best.pt and the top-k files (a resume redoes the epoch and rewrites them).
        """
        extra, stale, self._extra, self._stale = self._extra, self._stale, [], []
        if not self.is_main:
            return
        for name in [*extra, "last.pt"]:
            save_checkpoint(checkpoint, self.folder / name)
        for name in stale:
            (self.folder / name).unlink(missing_ok=True)

    def resume_path(self, resume: str | None) -> Path | None:
        """The checkpoint `--resume` means: None, "auto" (last.pt if there is one) or an explicit path."""
        if not resume:
            return None
        if resume != "auto":
            return Path(resume)
        path = self.folder / "last.pt"
        if path.is_file():
            return path
        log.info("--resume auto: no %s yet, starting a new run", path)
        return None

    def remove_interrupted_writes(self) -> None:
        for stale in remove_stale_temp_files(self.folder):
            log.info("removed %s, left by a checkpoint write that was interrupted", stale)


def should_stop_early(loop: LoopState, patience: int, metric: str) -> bool:
    """True when `metric` has not improved for `patience` evaluations (0 disables), with a log line."""
    if not patience or loop.bad_evals < patience:
        return False
    log.info(
        "early stop: %s has not improved for %d evaluations (best %.5g at epoch %d)",
        metric,
        loop.bad_evals,
        loop.best,
        loop.best_epoch,
    )
    return True
