"""The training loop shared by every task.

The Trainer owns devices, precision, DDP, optimisation and logging; the Task (see task.py) owns the model,
the data, the loss and the evaluation; `CheckpointKeeper` (checkpointing.py) owns which files are kept.
Resume is exact: checkpoints hold the model, optimizer, GradScaler, EMA, loop position (epoch and batch
within the epoch) and every rank's RNG state; the training order is a seeded permutation per epoch, so a
resumed run skips the batches it already consumed and continues on the same stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .budget import PLAN_AFTER_EPOCH, epochs_within_budget, review_epoch
from .checkpoint import CHECKPOINT_VERSION, CheckpointError, get_rng_state, load_checkpoint, set_rng_state
from .checkpointing import CheckpointKeeper, LoopState, should_stop_early
from .config import ConfigError, RunConfig, config_to_dict, save_config, validate_train_config
from .data import build_train_loader, build_val_loader, set_start
from .monitor import RunLogger, progress, use_progress_bars
from .optim import build_optimizer, build_scheduler, lr_record
from .resize import resize_to_state_dict
from .run_folder import RunFolderError, check_run_folder, clear_run, truncate_history
from .runtime import (
    autocast,
    barrier,
    broadcast_object,
    cpu_seconds,
    gather_objects,
    init_distributed,
    resolve_amp,
    resolve_device,
    seed_everything,
)
from .task import Task
from .weights import check_signature, load_weights_into

log = logging.getLogger("tasks.engine")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped without overwriting the last good checkpoint."""


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class Trainer:
    """Train and evaluate one Task with the settings of `cfg.train`.

    Args:
        cfg: the task's RunConfig subclass instance.
        task: the Task built from the same config.
        resume: None, "auto" (output_dir/checkpoints/last.pt if it exists) or a checkpoint path.
        weights: checkpoint or state dict used only to initialise the model.
        overwrite: let `fit` replace a run that output_dir already holds (else it refuses).
        partial_load: with `weights`, load the tensors that fit and only log the rest.
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: Task,
        *,
        resume: str | None = None,
        weights: str | None = None,
        overwrite: bool = False,
        partial_load: bool = False,
    ):
        self.cfg = cfg
        self.task = task
        self.tcfg = cfg.train
        validate_train_config(self.tcfg)
        self.dist = init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.amp_dtype = resolve_amp(self.tcfg.amp, self.device)
        if self.tcfg.sync_bn and self.dist.enabled and self.device.type == "cpu":
            raise ConfigError("train.sync_bn=true needs CUDA: torch's SyncBatchNorm has no CPU kernel")
        self.run_dir = Path(cfg.output_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.resume = resume
        self.weights = weights
        self.overwrite = overwrite
        self.best_metric = self.tcfg.best_metric or task.default_best_metric
        self.best_mode = self.tcfg.best_mode or task.best_mode
        self.keeper = CheckpointKeeper(self.ckpt_dir, self.best_mode, self.tcfg.keep_top_k, self.dist.is_main)
        self.show_bars = use_progress_bars() and self.dist.is_main

        # The task learns what a checkpoint's outputs mean (class order, ...) before it builds the model.
        weights_ckpt = load_checkpoint(weights) if weights else None
        if weights_ckpt is not None:
            task.adopt_checkpoint_meta(weights_ckpt.get("task_meta") or {}, str(weights), "weights")
        self.resume_path = self.keeper.resume_path(resume)
        self.resume_ckpt = self._load_resume_checkpoint(self.resume_path) if self.resume_path else None
        self.model = self._build_model()
        # Pruned widths are not in the config: the checkpoints of a run that starts from a pruned model
        # say so too, so that they load (resized) like the file the run started from.
        self.pruned = any(bool(c and c.get("pruned")) for c in (weights_ckpt, self.resume_ckpt))
        if self.resume_ckpt is not None and self.resume_ckpt.get("pruned"):
            resize_to_state_dict(self.model, self.resume_ckpt["model"])
        self.weights_report: dict | None = None
        if weights_ckpt is not None:
            report = load_weights_into(self.model, weights, partial=partial_load, checkpoint=weights_ckpt)
            self.weights_report = {"source": str(weights), **{k: len(v) for k, v in report.items()}}
        self.ema = None
        self.logger: RunLogger | None = None
        self._pending_rng: dict | None = None
        self._epoch_cpu_s: list[float] = []  # training CPU of each epoch this process ran (cpu_minutes)
        self._eval_cpu_s = 0.0  # CPU of the latest evaluation (train.cpu_minutes counts evaluations)

    def _build_model(self) -> nn.Module:
        """The task's model on this run's device and memory format, seeded alike on every rank."""
        # Same seed on every rank so that all ranks build identical weights (DDP also broadcasts them).
        seed_everything(self.tcfg.seed, self.tcfg.deterministic)
        model = self.task.build_model().to(self.device)
        if self.tcfg.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    # ----------------------------------------------------------------------------------- checkpoints

    def _unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def _checkpoint(self, loop: LoopState, metrics: dict) -> dict:
        rng = gather_objects(get_rng_state(), self.dist)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),  # for inspection: a resume rebuilds the schedule
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": loop.epoch,
            "step": loop.global_step,
            "rng": rng,
            "task": {"name": self.task.name, "version": CHECKPOINT_VERSION},
            "task_meta": _jsonable(self.task.checkpoint_meta()),
            "model_signature": _jsonable(self.task.model_signature()),
            "config": _jsonable(config_to_dict(self.cfg)),
            "metrics": _jsonable(metrics),
            "loop": _jsonable(loop.to_dict()),
            **({"pruned": True} if self.pruned else {}),
        }

    def _save(self, loop: LoopState, metrics: dict) -> None:
        """Write the keeper's files on rank 0; every rank takes part in the RNG gather."""
        self.keeper.write(self._checkpoint(loop, metrics))
        barrier(self.dist)

    def _load_resume_checkpoint(self, path: Path) -> dict:
        """Read and check the checkpoint to resume from; the task adopts its meta before model and data."""
        ckpt = load_checkpoint(path)
        missing = [k for k in ("model", "optimizer", "loop") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} cannot be resumed: it lacks {missing} (use --weights instead)")
        self.task.adopt_checkpoint_meta(ckpt.get("task_meta") or {}, str(path), "resume")
        check_signature(ckpt, _jsonable(self.task.model_signature()), path, "resume")
        return ckpt

    def _restore(self, ckpt: dict, path: Path) -> LoopState:
        """Load model, optimizer, scaler, EMA and RNG state; return the loop position.

        The learning-rate schedule and the optimizer's hyperparameters come from this run's config, not
        from the checkpoint: timm keeps t_initial and base values in its scheduler state, so restoring it
        would silently keep the old train.epochs / train.lr (a "resume for 2 more epochs" ran at lr 0).
        With an unchanged config both are identical, so resume stays exact.
        """
        self.model.load_state_dict(ckpt["model"])
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as err:  # torch: parameter groups of another size
            raise CheckpointError(
                f"cannot resume from {path}: its optimizer state holds other trainable parameters than "
                f"this run ({err}). Did model.backbone.frozen_stages change, or train.backbone_lr_mult / "
                "train.layer_decay turn on or off (they split the parameters into groups)? Use --weights "
                "to start a new run from it instead."
            ) from None
        for group, settings in zip(self.optimizer.param_groups, configured):
            group.update(settings)
        changed = _changed_train_keys(ckpt.get("config", {}).get("train", {}), config_to_dict(self.tcfg))
        if changed:
            log.info(
                "resume with changed settings (the schedule follows this config): %s", "; ".join(changed)
            )
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.module.load_state_dict(ckpt["ema"])
            else:
                log.warning("%s has no EMA weights: EMA restarts from the current weights", path)
                self.ema.set(self.model)
        self._pending_rng = self._rank_rng(ckpt.get("rng") or [])
        loop = LoopState.from_dict(ckpt["loop"])
        log.info(
            "resumed from %s at epoch %d, batch %d (step %d)",
            path,
            loop.epoch + 1,
            loop.batch_in_epoch,
            loop.global_step,
        )
        return loop

    def _rank_rng(self, saved: list | dict) -> dict | None:
        """This rank's saved RNG state, or None (with a warning) when the world size changed."""
        if isinstance(saved, dict):
            saved = [saved]
        if len(saved) == self.dist.world_size:
            return saved[self.dist.rank]
        log.warning(
            "checkpoint has RNG states for %d processes, this run has %d: RNG not restored",
            len(saved),
            self.dist.world_size,
        )
        return None

    # -------------------------------------------------------------------------------------- evaluate

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self._unwrap(self.model)

    def _run_eval(self, loader: DataLoader | None, epoch: int) -> dict:
        metrics: dict = {}
        if loader is not None and self.dist.is_main:
            model = self._eval_model()
            was_training = model.training
            model.eval()
            with autocast(self.device, self.amp_dtype):
                metrics = self.task.evaluate(model, loader, self.device, self.run_dir, epoch)
            model.train(was_training)
            metrics = {k: float(v) for k, v in metrics.items()}
        return broadcast_object(metrics, self.dist)

    def _eval_source(self) -> str:
        """The checkpoint --eval-only scores: --weights, --resume PATH, else the run's best.pt or last.pt."""
        source = self.weights
        if not source and self.resume and self.resume != "auto":
            source = self.resume
        if not source:
            for name in ("best.pt", "last.pt"):
                if (self.ckpt_dir / name).is_file():
                    return str(self.ckpt_dir / name)
            raise CheckpointError(
                f"--eval-only needs weights: pass --weights PATH or train first ({self.ckpt_dir} is empty)"
            )
        return str(source)

    def evaluate(self) -> dict:
        """Evaluate a checkpoint of this very model (see `_eval_source`) on the validation data alone.

        Returns:
            The task's metrics; also written to `<output_dir>/eval.json` with the checkpoint used.

        Raises:
            CheckpointError: the checkpoint holds another model (signature or tensors differ).
        """
        source = self._eval_source()
        ckpt = load_checkpoint(source)
        self.task.adopt_checkpoint_meta(ckpt.get("task_meta") or {}, source, "eval")
        check_signature(ckpt, _jsonable(self.task.model_signature()), source, "eval")
        self.model = self._build_model()  # built again: the adopted meta may size the head
        load_weights_into(self.model, source, strict=True, use_ema=self.tcfg.ema, checkpoint=ckpt)
        val_set = self.task.build_eval_dataset()
        if val_set is None:
            raise ConfigError("--eval-only: the task has no validation data configured")
        loader = build_val_loader(val_set, self.task, self.tcfg, self.device)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self._run_eval(loader, epoch=int(ckpt.get("epoch", 0) or 0))
        if self.dist.is_main:
            record = {"weights": source, **metrics}
            (self.run_dir / "eval.json").write_text(json.dumps(record, indent=2))
            log.info("eval %s: %s", source, _fmt(metrics))
        return metrics

    # ------------------------------------------------------------------------------------------- fit

    def fit(self) -> dict:
        """Train for `train.epochs`, evaluating, checkpointing and logging; return the run summary."""
        t = self.tcfg
        resume_path, resume_ckpt = self.resume_path, self.resume_ckpt
        self._check_run_folder(resuming=bool(self.resume))
        train_set, val_set = self.task.build_datasets()
        train_loader, sampler, seeded = build_train_loader(train_set, self.task, t, self.dist, self.device)
        val_loader = build_val_loader(val_set, self.task, t, self.device)
        batches_per_epoch, steps_per_epoch = self._epoch_length(train_loader, len(train_set))
        self._build_optimisation(steps_per_epoch)
        loop = self._restore(resume_ckpt, resume_path) if resume_ckpt is not None else LoopState()
        self._keep_planned_length(loop)
        self.train_model = self._wrap_for_training()
        if self.dist.is_main:
            self._open_run_folder(loop.global_step if resume_ckpt is not None else 0)
            log.info(
                "run folder %s | device %s | amp %s | world size %d | %d batches/epoch, %d steps/epoch",
                self.run_dir,
                self.device,
                self.amp_dtype or "off",
                self.dist.world_size,
                batches_per_epoch,
                steps_per_epoch,
            )
        # Per-rank stream for dropout/mixup from here on; a resume replaces it with the saved one.
        seed_everything(t.seed + self.dist.rank, t.deterministic)
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)

        start = time.perf_counter()
        self._cpu_mark = cpu_seconds()
        stopped_early = False
        last_metrics: dict = {}
        if loop.epoch >= self._epochs(loop):
            log.info("nothing to do: the checkpoint already finished %d epochs", loop.epoch)
        while loop.epoch < self._epochs(loop) and not stopped_early:
            last_metrics = self._train_epoch(loop, train_loader, sampler, seeded, batches_per_epoch)
            self._end_epoch(loop, last_metrics, val_loader)
            stopped_early = should_stop_early(loop, t.early_stop_patience, self.best_metric)
        return self._finish(loop, last_metrics, stopped_early, time.perf_counter() - start)

    def _check_run_folder(self, resuming: bool) -> None:
        """Rank 0 checks the folder and every rank raises the same error (no rank left at a barrier)."""
        problem = None
        if self.dist.is_main:
            try:
                check_run_folder(self.run_dir, resuming=resuming, overwrite=self.overwrite)
            except RunFolderError as err:
                problem = str(err)
        problem = broadcast_object(problem, self.dist)
        if problem:
            raise RunFolderError(problem)

    def _epoch_length(self, train_loader: DataLoader, num_samples: int) -> tuple[int, int]:
        """(batches, optimizer steps) per epoch, after train.max_steps_per_epoch."""
        t = self.tcfg
        full_batches = len(train_loader)
        if full_batches == 0:
            raise ConfigError(f"train.batch_size={t.batch_size} yields no batch from {num_samples} samples")
        batches = full_batches
        if t.max_steps_per_epoch:
            batches = min(full_batches, t.max_steps_per_epoch * t.accum_steps)
        return batches, math.ceil(batches / t.accum_steps)

    def _build_optimisation(self, steps_per_epoch: int) -> None:
        t = self.tcfg
        self._steps_per_epoch = steps_per_epoch
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if t.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t.ema_decay)

    # ------------------------------------------------------------------------------ CPU-time budget

    def _epochs(self, loop: LoopState) -> int:
        """The run's length: the one train.cpu_minutes fixed, else train.epochs."""
        return loop.planned_epochs or self.tcfg.epochs

    def _set_length(self, loop: LoopState, epochs: int) -> None:
        """Fix the run at `epochs` and rebuild the schedule for that length (timm's schedulers are pure
        functions of the update count, so the rebuilt one continues from `loop.global_step`)."""
        loop.planned_epochs = epochs
        planned = dataclasses.replace(self.tcfg, epochs=epochs)
        self.scheduler = build_scheduler(self.optimizer, planned, self._steps_per_epoch)

    def _keep_planned_length(self, loop: LoopState) -> None:
        """A resumed run keeps the length its budget fixed (within this config's train.epochs)."""
        t = self.tcfg
        if loop.planned_epochs and t.cpu_minutes:
            self._set_length(loop, min(loop.planned_epochs, t.epochs))
        else:
            loop.planned_epochs, loop.length_reviewed = 0, False

    def _budget_decision_due(self, loop: LoopState) -> bool:
        """Whether train.cpu_minutes fixes the length now: after epoch 3, then once more at the review
        epoch, if this process has timed two epochs of its own by then (a resumed run that has not keeps
        the length it was given) and the run is not already at its end."""
        if not self.tcfg.cpu_minutes or loop.epoch < PLAN_AFTER_EPOCH:
            return False
        if not loop.planned_epochs:
            return True
        return (
            not loop.length_reviewed
            and review_epoch(loop.planned_epochs) <= loop.epoch < loop.planned_epochs
            and len(self._epoch_cpu_s) >= 3
        )

    def _plan_to_budget(self, loop: LoopState, spent_s: float) -> None:
        """Fix (or review) how many epochs train.cpu_minutes holds; rank 0 decides for all."""
        if not self._budget_decision_due(loop):
            return
        t = self.tcfg
        timed = self._epoch_cpu_s[1:] or self._epoch_cpu_s  # this process's first epoch pays one-off costs
        epoch_s = sum(timed) / len(timed)
        if self._eval_cpu_s and t.eval_every:
            epoch_s += self._eval_cpu_s / t.eval_every  # evaluations are part of the budget too
        epochs = epochs_within_budget(t.cpu_minutes * 60, spent_s, epoch_s, loop.epoch, t.epochs)
        epochs = broadcast_object(epochs, self.dist)
        previous = loop.planned_epochs
        loop.length_reviewed = bool(previous)
        self._set_length(loop, epochs)
        log.info(
            "train.cpu_minutes=%g: %s epoch %d, an epoch costs %.1f CPU-s, so the run trains %d epochs%s%s",
            t.cpu_minutes,
            "reviewed after" if previous else "after",
            loop.epoch,
            epoch_s,
            epochs,
            f" (planned: {previous})" if previous else "",
            f" (train.epochs={t.epochs} is the most)" if epochs == t.epochs else "",
        )

    def _wrap_for_training(self) -> nn.Module:
        """SyncBatchNorm and DDP when distributed; the model itself otherwise."""
        t = self.tcfg
        if t.sync_bn and self.dist.enabled:
            # The converted modules share the same Parameter objects, so the optimizer stays valid.
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if not self.dist.enabled:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            self.model, device_ids=device_ids, find_unused_parameters=t.find_unused_parameters
        )

    def _open_run_folder(self, resumed_step: int) -> None:
        """Rank 0: clear a replaced run, drop history a resume replays, write config.yaml, start logging."""
        if self.overwrite:
            for path in clear_run(self.run_dir):
                log.info("--overwrite: removed %s of the earlier run", path)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.keeper.remove_interrupted_writes()
        dropped = truncate_history(self.run_dir / "metrics.jsonl", resumed_step)
        if dropped:
            log.info(
                "metrics.jsonl: dropped %d records after step %d (this run replays them)",
                dropped,
                resumed_step,
            )
        save_config(self.cfg, self.run_dir / "config.yaml")
        self._write_weights_report()
        self.logger = RunLogger(
            self.run_dir, self.best_metric, tensorboard=self.tcfg.tensorboard, purge_step=resumed_step or None
        )

    def _write_weights_report(self) -> None:
        """weights_report.json: what each weight file put into the model (tensor counts per outcome).

        The backbone's `load_report` (model.backbone.weights) and the --weights load, so a run folder
        says where its initial weights came from and how much of them fitted.
        """
        reports = [
            {"source": m.load_report.source, "part": "backbone", **m.load_report.counts()}
            for m in self.model.modules()
            if getattr(m, "load_report", None) is not None
        ]
        if self.weights_report is not None:
            reports.append({"part": "model (--weights)", **self.weights_report})
        if reports:
            (self.run_dir / "weights_report.json").write_text(json.dumps(reports, indent=2))

    def _end_epoch(self, loop: LoopState, train_metrics: dict, val_loader: DataLoader | None) -> None:
        """Evaluate when due, let the keeper and the task know, log the epoch, then checkpoint when due.

        The epoch's record is logged before last.pt is written: a kill in between (or before the next
        write, with train.checkpoint_every > 1) leaves records newer than last.pt, which the resumed run
        drops (truncate_history) and writes again. Every evaluated epoch is written, so best.pt and the
        top-k files are never behind the evaluations that chose them.
        """
        t = self.tcfg
        epoch = loop.epoch  # already advanced to the next epoch by _train_epoch
        trained = cpu_seconds()
        self._epoch_cpu_s.append(trained - self._cpu_mark)
        self._plan_to_budget(loop, loop.cpu_s + trained - self._cpu_mark)
        metrics: dict = {}
        last_epoch = epoch == self._epochs(loop)
        evaluated = val_loader is not None and (epoch % t.eval_every == 0 or last_epoch)
        if evaluated:
            metrics = self._run_eval(val_loader, epoch)
            self._eval_cpu_s = cpu_seconds() - trained
            if self.best_metric not in metrics:
                raise ConfigError(
                    f"train.best_metric={self.best_metric!r} is not among the task's metrics "
                    f"{sorted(metrics)}"
                )
            is_best = self.keeper.record(loop, metrics[self.best_metric])
            if self.dist.is_main:
                self.task.after_evaluation(self.run_dir, epoch, metrics, is_best)
        now = cpu_seconds()
        loop.cpu_s += now - self._cpu_mark  # training and evaluation, so curves show the whole cost
        self._cpu_mark = now
        shown = {
            **train_metrics,
            **{f"val/{k}": v for k, v in metrics.items()},
            "cpu_time_s": round(loop.cpu_s, 1),
        }
        if self.logger is not None:
            self.logger.write(
                {"kind": "epoch", "epoch": epoch, "step": loop.global_step, **shown}, loop.global_step
            )
            if t.plots:
                self.logger.plot()
            log.info("epoch %d/%d %s", epoch, self._epochs(loop), _fmt(shown))
        if evaluated or last_epoch or epoch % t.checkpoint_every == 0:
            self._save(loop, {**train_metrics, **metrics})

    def _finish(self, loop: LoopState, last_metrics: dict, stopped_early: bool, seconds: float) -> dict:
        """Write summary.json (rank 0) and return the run summary."""
        summary = {
            "epochs_completed": loop.epoch,
            "global_step": loop.global_step,
            "best_metric": self.best_metric,
            "best_value": loop.best,
            "best_epoch": loop.best_epoch,
            "stopped_early": stopped_early,
            "train_time_s": round(seconds, 3),
            "train_cpu_s": round(loop.cpu_s, 1),
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "amp": str(self.amp_dtype or "off"),
            "last": last_metrics,
        }
        if self.dist.is_main:
            summary.update(self.task.summary_extras(self.run_dir))
            (self.run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
            if self.logger is not None:
                self.logger.close()
        barrier(self.dist)
        return summary

    # ----------------------------------------------------------------------------------------- epoch

    def _train_epoch(
        self, loop: LoopState, loader: DataLoader, sampler: Any, seeded: Any, batches: int
    ) -> dict:
        """Run the rest of epoch `loop.epoch` (`batches` long); advances `loop`, returns train metrics."""
        t = self.tcfg
        first = loop.batch_in_epoch
        sampler.set_epoch(loop.epoch)
        seeded.set_epoch(loop.epoch)
        set_start(sampler, first, t.batch_size)
        if first == 0:
            loop.loss_sum, loop.loss_count = 0.0, 0
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(loop.global_step)
        self._epoch_start = time.perf_counter()
        bar = progress(
            loader, batches - first, f"epoch {loop.epoch + 1}/{self._epochs(loop)}", self.show_bars
        )
        extras: dict[str, float] = {}
        for index, batch in enumerate(bar, start=first):
            if index >= batches:
                break
            is_update = (index + 1) % t.accum_steps == 0 or index + 1 == batches
            loss_value = self._forward_backward(batch, loop, index, is_update, extras)
            if not is_update:
                continue
            lrs = self._optimizer_step(loop)
            self._log_step(loop, index, first, batches, loss_value, lrs, extras, bar)
            if (
                t.checkpoint_every_steps
                and loop.global_step % t.checkpoint_every_steps == 0
                and index + 1 < batches
            ):
                loop.batch_in_epoch = index + 1
                self._save(loop, {})
        if hasattr(bar, "close"):
            bar.close()
        loop.epoch += 1
        loop.batch_in_epoch = 0
        return {
            "train/loss": loop.loss_sum / max(loop.loss_count, 1),
            **lr_record(self.optimizer),
            **{f"train/{k}": v for k, v in extras.items()},
            "epoch_time_s": round(time.perf_counter() - self._epoch_start, 3),
        }

    def _forward_backward(
        self, batch: Any, loop: LoopState, index: int, is_update: bool, extras: dict
    ) -> float:
        """The task's loss on one batch, backward (accumulating when not `is_update`); returns the loss."""
        sync = contextlib.nullcontext()
        if self.dist.enabled and not is_update:
            sync = self.train_model.no_sync()  # accumulate locally; all-reduce once per optimizer step
        with sync:
            with autocast(self.device, self.amp_dtype):
                out = self.task.training_step(self.train_model, batch, self.device)
            loss = out["loss"]
            loss_value = self._global_mean(loss.detach().float())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"loss is {loss_value} at epoch {loop.epoch + 1}, batch {index + 1}, optimizer step "
                    f"{loop.global_step + 1}; stopped without saving. The last good checkpoint "
                    f"({self.ckpt_dir / 'last.pt'}) can be resumed with a lower train.lr or "
                    "train.grad_clip > 0."
                )
            self.scaler.scale(loss / self.tcfg.accum_steps).backward()
        loop.loss_sum += loss_value
        loop.loss_count += 1
        for key, value in out.items():
            if key != "loss" and torch.is_tensor(value) and value.numel() == 1:
                extras[key] = float(value.detach())
        return loss_value

    def _optimizer_step(self, loop: LoopState) -> dict[str, float]:
        """Clip, step, advance the schedule and the EMA; returns the lrs the step used (`lr_record`)."""
        if self.tcfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loop.global_step += 1
        lrs = lr_record(self.optimizer)
        self.scheduler.step_update(loop.global_step)
        if self.ema is not None:
            self.ema.update(self.model, step=loop.global_step)
        return lrs

    def _log_step(
        self, loop: LoopState, index: int, first: int, batches: int, loss: float, lrs: dict, extras: dict, bar
    ) -> None:
        """metrics.jsonl every train.log_every steps (and at the epoch's end); a log line or the bar.

        `lrs` is `lr_record` of the step: `lr` and, with per-part learning rates, `lr/<group>` as well.
        """
        t = self.tcfg
        if self.show_bars and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs['lr']:.3g}")
        if self.logger is None or (loop.global_step % t.log_every and index + 1 != batches):
            return
        record = {"kind": "step", "epoch": loop.epoch + 1, "step": loop.global_step, "loss": loss, **lrs}
        self.logger.write({**record, **extras}, loop.global_step)
        if not self.show_bars:
            rate = (index + 1 - first) * t.batch_size / max(time.perf_counter() - self._epoch_start, 1e-9)
            groups = ", ".join(f"{k[len('lr/') :]} {v:.3g}" for k, v in lrs.items() if k != "lr")
            log.info(
                "epoch %d/%d step %d/%d loss %.4f lr %.3g%s %.1f samples/s",
                loop.epoch + 1,
                self._epochs(loop),
                math.ceil((index + 1) / t.accum_steps),
                math.ceil(batches / t.accum_steps),
                loss,
                lrs["lr"],
                f" ({groups})" if groups else "",
                rate,
            )

    def _global_mean(self, value: torch.Tensor) -> float:
        """Mean of a scalar over ranks (so every rank sees the same NaN and stops together)."""
        if self.dist.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.dist.world_size
        return float(value)


def _changed_train_keys(saved: dict, current: dict) -> list[str]:
    """`key old -> new` for the train settings that differ between a checkpoint and this run."""
    return [
        f"train.{key} {saved[key]!r} -> {value!r}"
        for key, value in current.items()
        if key in saved and saved[key] != value
    ]


def _fmt(metrics: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
