"""The training loop shared by every task.

The Trainer owns devices, precision, DDP, optimisation, checkpoints and logging; the Task (see task.py)
owns the model, the data, the loss and the evaluation. Resume is exact: checkpoints hold the model,
optimizer, scheduler, GradScaler, EMA, loop position (epoch and batch within the epoch) and every rank's
RNG state; the training order is a seeded permutation per epoch, so a resumed run skips the batches it
already consumed and continues on the same stream.
"""

from __future__ import annotations

import contextlib
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
from torch.utils.data import DataLoader, Dataset

from .checkpoint import (
    CheckpointError,
    extract_state_dict,
    get_rng_state,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
    set_rng_state,
)
from .config import ConfigError, RunConfig, config_to_dict, save_config
from .data import EpochSeededDataset, ResumableDistributedSampler, SkipBatches
from .monitor import RunLogger, progress, use_progress_bars
from .optim import build_optimizer, build_scheduler
from .runtime import (
    autocast,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    resolve_amp,
    resolve_device,
    seed_everything,
)
from .task import Task

log = logging.getLogger("tasks.engine")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped without overwriting the last good checkpoint."""


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _signature_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _signature_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: checkpoint={a!r} config={b!r}")
    return diffs


def load_weights_into(model: nn.Module, path: str | Path, strict: bool = False) -> dict:
    """Initialise `model` from a checkpoint or state-dict file; tensors whose shape differs are skipped.

    Args:
        model: the (unwrapped) model.
        path: our checkpoint (uses its "model" entry) or any state dict saved with torch.save.
        strict: require every model tensor to be present with the same shape (used by --eval-only).

    Returns:
        Report dict with lists "loaded", "missing", "unexpected", "shape_mismatch".

    Raises:
        CheckpointError: unreadable file, nothing matched, or (strict) anything missing.
    """
    checkpoint = load_checkpoint(path)
    state = extract_state_dict(checkpoint, path)
    if isinstance(checkpoint, dict) and checkpoint.get("pruned"):
        # Pruned widths are not expressible in the config: resize the configured layers to the saved
        # tensors first (tools/prune.py writes this flag), so fine-tuning starts from the pruned network.
        from tasks.deploy.prune import resize_to_state_dict  # late import: deploy builds on the engine

        resize_to_state_dict(model, state)
    own = model.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = {
        "loaded": sorted(loadable),
        "missing": sorted(k for k in own if k not in loadable),
        "unexpected": sorted(k for k in state if k not in own),
        "shape_mismatch": sorted(k for k in state if k in own and own[k].shape != state[k].shape),
    }
    if not loadable:
        raise CheckpointError(f"{path}: no tensor matches the model (first keys: {list(state)[:5]})")
    if strict and report["missing"]:
        raise CheckpointError(f"{path}: missing or mis-shaped weights for {report['missing'][:10]}")
    model.load_state_dict(loadable, strict=False)
    log.info(
        "weights %s: loaded %d tensors, %d missing, %d unexpected, %d shape mismatches",
        path,
        len(report["loaded"]),
        len(report["missing"]),
        len(report["unexpected"]),
        len(report["shape_mismatch"]),
    )
    return report


class Trainer:
    """Train and evaluate one Task with the settings of `cfg.train`.

    Args:
        cfg: the task's RunConfig subclass instance.
        task: the Task built from the same config.
        resume: None, "auto" (output_dir/checkpoints/last.pt if it exists) or a checkpoint path.
        weights: checkpoint or state dict used only to initialise the model.
    """

    def __init__(self, cfg: RunConfig, task: Task, *, resume: str | None = None, weights: str | None = None):
        self.cfg = cfg
        self.task = task
        self.tcfg = cfg.train
        self._validate_train_config()
        self.dist = init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.amp_dtype = resolve_amp(self.tcfg.amp, self.device)
        if self.tcfg.sync_bn and self.dist.enabled and self.device.type == "cpu":
            raise ConfigError("train.sync_bn=true needs CUDA: torch's SyncBatchNorm has no CPU kernel")
        self.run_dir = Path(cfg.output_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.resume = resume
        self.weights = weights
        self.best_metric = self.tcfg.best_metric or task.default_best_metric
        self.best_mode = self.tcfg.best_mode or task.best_mode
        self.show_bars = use_progress_bars() and self.dist.is_main

        # Same seed on every rank so that all ranks build identical weights (DDP also broadcasts them).
        seed_everything(self.tcfg.seed, self.tcfg.deterministic)
        self.model = task.build_model()
        if weights:
            load_weights_into(self.model, weights)
        self.model.to(self.device)
        if self.tcfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = None
        self.logger: RunLogger | None = None

    # ------------------------------------------------------------------------------------- validation

    def _validate_train_config(self) -> None:
        t = self.tcfg
        positive = {
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "accum_steps": t.accum_steps,
            "eval_every": t.eval_every,
            "log_every": t.log_every,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{key}={value}: must be >= 1")
        for key in (
            "num_workers",
            "keep_top_k",
            "early_stop_patience",
            "max_steps_per_epoch",
            "checkpoint_every_steps",
        ):
            if getattr(t, key) < 0:
                raise ConfigError(f"train.{key}={getattr(t, key)}: must be >= 0")
        if t.best_mode not in ("", "max", "min"):
            raise ConfigError(f"train.best_mode={t.best_mode!r}: expected max or min")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay={t.ema_decay}: must be in [0, 1)")

    # ------------------------------------------------------------------------------------------ data

    def _train_loader(self, dataset: Dataset) -> tuple[DataLoader, Any, EpochSeededDataset]:
        t = self.tcfg
        seeded = EpochSeededDataset(dataset, t.seed)
        custom = self.task.train_batch_sampler(dataset, t.batch_size, t.seed)
        # A private generator: creating a loader iterator must not draw from the global torch RNG, or
        # a resumed run (which creates its iterator after restoring the RNG) would drift.
        generator = torch.Generator().manual_seed(t.seed)
        common = dict(
            num_workers=t.num_workers,
            collate_fn=self.task.collate_fn,
            pin_memory=self.device.type == "cuda",
            generator=generator,
            persistent_workers=False,  # workers must see the dataset's new epoch every epoch
        )
        if custom is not None:
            sampler = SkipBatches(custom)
            return DataLoader(seeded, batch_sampler=sampler, **common), sampler, seeded
        sampler = ResumableDistributedSampler(dataset, self.dist.world_size, self.dist.rank, seed=t.seed)
        per_rank = sampler.num_samples
        if per_rank < 1:
            raise ConfigError("the training set is empty")
        # Drop a ragged last batch (a batch of 1 breaks BatchNorm) unless the set is smaller than a batch.
        drop_last = per_rank >= t.batch_size
        loader = DataLoader(seeded, batch_size=t.batch_size, sampler=sampler, drop_last=drop_last, **common)
        return loader, sampler, seeded

    def _val_loader(self, dataset: Dataset | None) -> DataLoader | None:
        if dataset is None:
            return None
        return DataLoader(
            dataset,
            batch_size=self.tcfg.batch_size,
            shuffle=False,
            num_workers=self.tcfg.num_workers,
            collate_fn=self.task.collate_fn,
            pin_memory=self.device.type == "cuda",
        )

    @staticmethod
    def _set_start(sampler: Any, batches: int, batch_size: int) -> None:
        if isinstance(sampler, SkipBatches):
            sampler.skip = batches
        else:
            sampler.set_start_index(batches * batch_size)

    # ----------------------------------------------------------------------------------- checkpoints

    def _unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model

    def _checkpoint(self, loop: dict, metrics: dict) -> dict:
        rng = gather_objects(get_rng_state(), self.dist)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": loop["epoch"],
            "step": loop["global_step"],
            "rng": rng,
            "model_signature": _jsonable(self.task.model_signature()),
            "config": _jsonable(config_to_dict(self.cfg)),
            "metrics": _jsonable(metrics),
            "loop": _jsonable(loop),
        }

    def _save(self, loop: dict, metrics: dict, names: list[str]) -> None:
        """Write last.pt (and best/top-k copies) on rank 0; every rank takes part in the RNG gather."""
        obj = self._checkpoint(loop, metrics)
        if self.dist.is_main:
            for name in names:
                save_checkpoint(obj, self.ckpt_dir / name)
        barrier(self.dist)

    def _resolve_resume_path(self) -> Path | None:
        if not self.resume:
            return None
        if self.resume == "auto":
            path = self.ckpt_dir / "last.pt"
            if path.is_file():
                return path
            log.info("--resume auto: no %s yet, starting a new run", path)
            return None
        return Path(self.resume)

    def _restore(self, path: Path) -> dict:
        ckpt = load_checkpoint(path)
        signature = _jsonable(self.task.model_signature())
        saved = ckpt.get("model_signature")
        if saved is not None and saved != signature:
            diffs = "; ".join(_signature_diff(saved, signature)) or "different structure"
            raise CheckpointError(
                f"refusing to resume from {path}: its model config differs from this run ({diffs}). "
                "Use --weights to initialise from it instead."
            )
        missing = [k for k in ("model", "optimizer", "scheduler", "loop") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} cannot be resumed: it lacks {missing} (use --weights instead)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.module.load_state_dict(ckpt["ema"])
            else:
                log.warning("%s has no EMA weights: EMA restarts from the current weights", path)
                self.ema.set(self.model)
        loop = ckpt["loop"]
        rng = ckpt.get("rng") or []
        if isinstance(rng, dict):
            rng = [rng]
        if len(rng) == self.dist.world_size:
            self._pending_rng = rng[self.dist.rank]
        else:
            log.warning(
                "checkpoint has RNG states for %d processes, this run has %d: RNG not restored",
                len(rng),
                self.dist.world_size,
            )
        log.info(
            "resumed from %s at epoch %d, batch %d (step %d)",
            path,
            loop["epoch"] + 1,
            loop["batch_in_epoch"],
            loop["global_step"],
        )
        return loop

    def _update_top_k(self, loop: dict, epoch: int, value: float) -> list[str]:
        """Return extra checkpoint names to write for top-k and delete those that fell out."""
        k = self.tcfg.keep_top_k
        if k <= 0:
            return []
        name = f"epoch{epoch:04d}.pt"
        entries = loop["top_k"] + [[value, name]]
        entries.sort(key=lambda e: e[0], reverse=self.best_mode == "max")
        keep, drop = entries[:k], entries[k:]
        loop["top_k"] = keep
        if self.dist.is_main:
            for _, old in drop:
                if old != name:
                    (self.ckpt_dir / old).unlink(missing_ok=True)
        return [name] if any(n == name for _, n in keep) else []

    def _improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.best_mode == "max" else value < best

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

    def evaluate(self) -> dict:
        """Evaluate weights from --weights, --resume PATH, or the run's best.pt / last.pt (--eval-only).

        Returns:
            The task's metrics; also written to `<output_dir>/eval.json` with the checkpoint used.
        """
        source = self.weights
        if not source and self.resume and self.resume != "auto":
            source = self.resume
        if not source:
            for name in ("best.pt", "last.pt"):
                if (self.ckpt_dir / name).is_file():
                    source = str(self.ckpt_dir / name)
                    break
        if not source:
            raise CheckpointError(
                f"--eval-only needs weights: pass --weights PATH or train first ({self.ckpt_dir} is empty)"
            )
        ckpt = load_checkpoint(source)
        if self.tcfg.ema and ckpt.get("ema"):
            self.model.load_state_dict(ckpt["ema"])
        else:
            load_weights_into(self.model, source, strict=True)
        _, val_set = self.task.build_datasets()
        if val_set is None:
            raise ConfigError("--eval-only: the task has no validation data configured")
        loader = self._val_loader(val_set)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self._run_eval(loader, epoch=int(ckpt.get("epoch", 0) or 0))
        if self.dist.is_main:
            record = {"weights": str(source), **metrics}
            (self.run_dir / "eval.json").write_text(json.dumps(record, indent=2))
            log.info("eval %s: %s", source, _fmt(metrics))
        return metrics

    # ------------------------------------------------------------------------------------------- fit

    def fit(self) -> dict:
        """Train for `train.epochs`, evaluating, checkpointing and logging; return the run summary."""
        t = self.tcfg
        train_set, val_set = self.task.build_datasets()
        train_loader, sampler, seeded = self._train_loader(train_set)
        val_loader = self._val_loader(val_set)
        full_batches = len(train_loader)
        if full_batches == 0:
            raise ConfigError(
                f"train.batch_size={t.batch_size} yields no batch from {len(train_set)} samples"
            )
        batches_per_epoch = full_batches
        if t.max_steps_per_epoch:
            batches_per_epoch = min(full_batches, t.max_steps_per_epoch * t.accum_steps)
        steps_per_epoch = math.ceil(batches_per_epoch / t.accum_steps)

        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = build_scheduler(self.optimizer, t, steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if t.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t.ema_decay)

        loop = {
            "epoch": 0,
            "batch_in_epoch": 0,
            "global_step": 0,
            "best": None,
            "best_epoch": -1,
            "bad_evals": 0,
            "top_k": [],
            "loss_sum": 0.0,
            "loss_count": 0,
        }
        self._pending_rng = None
        resume_path = self._resolve_resume_path()
        if resume_path is not None:
            loop.update(self._restore(resume_path))

        if t.sync_bn and self.dist.enabled:
            # The converted modules share the same Parameter objects, so the optimizer stays valid.
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        model: nn.Module = self.model
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=t.find_unused_parameters
            )
        self.train_model = model

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temp_files(self.ckpt_dir):
                log.info("removed %s, left by a checkpoint write that was interrupted", stale)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.logger = RunLogger(self.run_dir, self.best_metric, tensorboard=t.tensorboard)
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
        stopped_early = False
        last_metrics: dict = {}
        if loop["epoch"] >= t.epochs:
            log.info("nothing to do: the checkpoint already finished %d epochs", loop["epoch"])
        while loop["epoch"] < t.epochs:
            last_metrics = self._train_epoch(loop, train_loader, sampler, seeded, batches_per_epoch)
            epoch = loop["epoch"]  # already advanced to the next epoch by _train_epoch
            metrics: dict = {}
            names = ["last.pt"]
            if val_loader is not None and (epoch % t.eval_every == 0 or epoch == t.epochs):
                metrics = self._run_eval(val_loader, epoch)
                if self.best_metric not in metrics:
                    raise ConfigError(
                        f"train.best_metric={self.best_metric!r} is not among the task's metrics "
                        f"{sorted(metrics)}"
                    )
                value = metrics[self.best_metric]
                if self._improved(value, loop["best"]):
                    loop["best"], loop["best_epoch"], loop["bad_evals"] = value, epoch, 0
                    names.append("best.pt")
                else:
                    loop["bad_evals"] += 1
                names += self._update_top_k(loop, epoch, value)
            record = {
                "kind": "epoch",
                "epoch": epoch,
                "step": loop["global_step"],
                **last_metrics,
                **{f"val/{k}": v for k, v in metrics.items()},
            }
            self._save(loop, {**last_metrics, **metrics}, names)
            if self.logger is not None:
                self.logger.write(record, loop["global_step"])
                if t.plots:
                    self.logger.plot()
                log.info(
                    "epoch %d/%d %s",
                    epoch,
                    t.epochs,
                    _fmt({**last_metrics, **{f"val/{k}": v for k, v in metrics.items()}}),
                )
            if t.early_stop_patience and loop["bad_evals"] >= t.early_stop_patience:
                log.info(
                    "early stop: %s has not improved for %d evaluations (best %.5g at epoch %d)",
                    self.best_metric,
                    loop["bad_evals"],
                    loop["best"],
                    loop["best_epoch"],
                )
                stopped_early = True
                break

        summary = {
            "epochs_completed": loop["epoch"],
            "global_step": loop["global_step"],
            "best_metric": self.best_metric,
            "best_value": loop["best"],
            "best_epoch": loop["best_epoch"],
            "stopped_early": stopped_early,
            "train_time_s": round(time.perf_counter() - start, 3),
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

    def _train_epoch(
        self, loop: dict, loader: DataLoader, sampler: Any, seeded: EpochSeededDataset, batches_per_epoch: int
    ) -> dict:
        """Run the rest of epoch `loop["epoch"]`; advances `loop` and returns the epoch's train metrics."""
        t = self.tcfg
        epoch = loop["epoch"]
        first = loop["batch_in_epoch"]
        sampler.set_epoch(epoch)
        seeded.set_epoch(epoch)
        self._set_start(sampler, first, t.batch_size)
        if first == 0:
            loop["loss_sum"], loop["loss_count"] = 0.0, 0
        model = self.train_model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(loop["global_step"])
        seen_start = time.perf_counter()
        batches = progress(
            loader,
            total=batches_per_epoch - first,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            enabled=self.show_bars,
        )
        extras: dict[str, float] = {}
        index = first
        for index, batch in enumerate(batches, start=first):
            if index >= batches_per_epoch:
                break
            is_update = (index + 1) % t.accum_steps == 0 or index + 1 == batches_per_epoch
            sync = contextlib.nullcontext()
            if self.dist.enabled and not is_update:
                sync = model.no_sync()  # accumulate locally; all-reduce once per optimizer step
            with sync:
                with autocast(self.device, self.amp_dtype):
                    out = self.task.training_step(model, batch, self.device)
                loss = out["loss"]
                loss_value = self._global_mean(loss.detach().float())
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"loss is {loss_value} at epoch {epoch + 1}, batch {index + 1}, optimizer step "
                        f"{loop['global_step'] + 1}; stopped without saving. The last good checkpoint "
                        f"({self.ckpt_dir / 'last.pt'}) can be resumed with a lower train.lr or "
                        "train.grad_clip > 0."
                    )
                self.scaler.scale(loss / t.accum_steps).backward()
            loop["loss_sum"] += loss_value
            loop["loss_count"] += 1
            for key, value in out.items():
                if key != "loss" and torch.is_tensor(value) and value.numel() == 1:
                    extras[key] = float(value.detach())
            if not is_update:
                continue
            if t.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            loop["global_step"] += 1
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step_update(loop["global_step"])
            if self.ema is not None:
                self.ema.update(self.model, step=loop["global_step"])
            step_in_epoch = math.ceil((index + 1) / t.accum_steps)
            if self.logger is not None and (
                loop["global_step"] % t.log_every == 0 or index + 1 == batches_per_epoch
            ):
                self.logger.write(
                    {
                        "kind": "step",
                        "epoch": epoch + 1,
                        "step": loop["global_step"],
                        "loss": loss_value,
                        "lr": lr,
                        **extras,
                    },
                    loop["global_step"],
                )
                if not self.show_bars:
                    rate = (index + 1 - first) * t.batch_size / max(time.perf_counter() - seen_start, 1e-9)
                    log.info(
                        "epoch %d/%d step %d/%d loss %.4f lr %.3g %.1f samples/s",
                        epoch + 1,
                        t.epochs,
                        step_in_epoch,
                        math.ceil(batches_per_epoch / t.accum_steps),
                        loss_value,
                        lr,
                        rate,
                    )
            if self.show_bars and hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}")
            if (
                t.checkpoint_every_steps
                and loop["global_step"] % t.checkpoint_every_steps == 0
                and index + 1 < batches_per_epoch
            ):
                loop["batch_in_epoch"] = index + 1
                self._save(loop, {}, ["last.pt"])
        if hasattr(batches, "close"):
            batches.close()
        loop["epoch"] = epoch + 1
        loop["batch_in_epoch"] = 0
        mean_loss = loop["loss_sum"] / max(loop["loss_count"], 1)
        return {
            "train/loss": mean_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"train/{k}": v for k, v in extras.items()},
            "epoch_time_s": round(time.perf_counter() - seen_start, 3),
        }

    def _global_mean(self, value: torch.Tensor) -> float:
        """Mean of a scalar over ranks (so every rank sees the same NaN and stops together)."""
        if self.dist.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.dist.world_size
        return float(value)


def _fmt(metrics: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
