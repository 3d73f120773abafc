from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.engine import CheckpointError, ConfigError, NonFiniteLossError, Trainer, load_checkpoint
from tasks.engine.runtime import cpu_has_native_bf16, cpu_seconds, resolve_amp, resolve_device


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol), key


def test_fit_writes_the_run_folder(toy_task_cls, toy_config):
    cfg = toy_config(epochs=2, keep_top_k=1, ema=True, ema_decay=0.5, warmup_epochs=0.5, plots=True)
    summary = Trainer(cfg, toy_task_cls(cfg)).fit()
    run = Path(cfg.output_dir)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.pt" in ckpts and "best.pt" in ckpts
    assert len([c for c in ckpts if c.startswith("epoch")]) == 1  # keep_top_k=1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and "val/acc" in epochs[0] and "train/loss" in epochs[0]
    assert len([r for r in rows if r["kind"] == "step"]) == 12  # 48 samples / 8 per batch * 2 epochs
    assert summary["epochs_completed"] == 2 and summary["global_step"] == 12
    assert json.loads((run / "summary.json").read_text())["best_metric"] == "acc"
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "ema",
        "epoch",
        "step",
        "rng",
        "model_signature",
        "config",
        "metrics",
    ):
        assert key in last, key
    assert last["epoch"] == 2 and last["step"] == 12 and last["ema"] is not None


def test_grad_accumulation_equals_large_batch(toy_task_cls, toy_config):
    """accum_steps=2 with batch 4 makes the same update as batch 8 (model without BatchNorm)."""
    results = []
    for batch, accum in ((8, 1), (4, 2)):
        cfg = toy_config(
            epochs=1,
            batch_size=batch,
            accum_steps=accum,
            max_steps_per_epoch=3,
            optimizer="sgd",
            lr=0.5,
            scheduler="constant",
        )
        cfg.output_dir += f"_{batch}"
        cfg.model.norm = False
        task = toy_task_cls(cfg)
        task.training_step = lambda model, b, device: {
            "loss": torch.nn.functional.cross_entropy(model(b[0]), b[1])
        }
        trainer = Trainer(cfg, task)
        trainer.fit()
        results.append(params(trainer.model))
    assert_same_state(results[0], results[1], atol=1e-6)


def test_grad_clip_limits_the_update(toy_task_cls, toy_config):
    deltas = []
    for clip in (0.0, 1e-3):
        cfg = toy_config(
            epochs=1,
            max_steps_per_epoch=1,
            lr=1.0,
            momentum=0.0,
            weight_decay=0.0,
            scheduler="constant",
            grad_clip=clip,
        )
        cfg.output_dir += f"_{clip}"
        trainer = Trainer(cfg, toy_task_cls(cfg))
        before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
        trainer.fit()
        after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        deltas.append(float((after - before).norm()))
    assert deltas[0] > 1e-2
    assert deltas[1] == pytest.approx(1e-3, rel=1e-3)  # lr=1, no momentum: update norm == clipped grad norm


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(toy_task_cls, toy_config):
    cfg = toy_config(epochs=2, checkpoint_every_steps=1)
    cfg.data.nan_at_step = 4
    with pytest.raises(NonFiniteLossError, match="optimizer step 4"):
        Trainer(cfg, toy_task_cls(cfg)).fit()
    last = load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")
    assert last["step"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    cfg.data.nan_at_step = 0
    summary = Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()  # the last good checkpoint resumes
    assert summary["global_step"] == 12


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [3, 6, 8])
def test_resume_mid_epoch_is_exact(toy_task_cls, toy_config, crash_at):
    """A run that crashes after `crash_at` steps and resumes reaches the uninterrupted run's weights."""
    kwargs = dict(
        epochs=2,
        checkpoint_every_steps=1,
        deterministic=True,
        ema=True,
        ema_decay=0.8,
        warmup_epochs=0.5,
        optimizer="adamw",
        lr=0.01,
    )
    ref_cfg = toy_config(**kwargs)
    ref_cfg.output_dir += "_ref"
    ref_cfg.model.dropout = 0.3
    reference = Trainer(ref_cfg, toy_task_cls(ref_cfg))
    reference.fit()

    cfg = toy_config(**kwargs)
    cfg.model.dropout = 0.3
    task = toy_task_cls(cfg)
    step = task.training_step

    def crashing_step(model, batch, device):
        if task.calls == crash_at:
            raise Crash
        return step(model, batch, device)

    task.training_step = crashing_step
    with pytest.raises(Crash):
        Trainer(cfg, task).fit()
    assert load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")["step"] == crash_at
    resumed = Trainer(cfg, toy_task_cls(cfg), resume="auto")
    resumed.fit()
    assert_same_state(params(resumed.model), params(reference.model), atol=1e-6)
    assert_same_state(resumed.ema.module.state_dict(), reference.ema.module.state_dict(), atol=1e-6)
    rows = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    ref_rows = (Path(ref_cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    final = json.loads(rows[-1])
    ref_final = json.loads(ref_rows[-1])
    assert final["train/loss"] == pytest.approx(ref_final["train/loss"], abs=1e-6)


def test_resume_refuses_a_different_model(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1, max_steps_per_epoch=1)
    Trainer(cfg, toy_task_cls(cfg)).fit()
    cfg.model.width = 16
    with pytest.raises(CheckpointError, match=r"model.*width: checkpoint=8 config=16"):
        Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()


def test_weights_initialise_and_eval_only(toy_task_cls, toy_config, tmp_path):
    cfg = toy_config(epochs=1)
    trained = Trainer(cfg, toy_task_cls(cfg))
    trained.fit()
    best = Path(cfg.output_dir) / "checkpoints" / "best.pt"
    cfg2 = toy_config(epochs=1)
    cfg2.output_dir = str(tmp_path / "eval")
    evaluator = Trainer(cfg2, toy_task_cls(cfg2), weights=str(best))
    assert_same_state(params(evaluator.model), load_checkpoint(best)["model"])
    metrics = evaluator.evaluate()
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["acc"] == metrics["acc"]
    saved = load_checkpoint(best)["metrics"]  # what the training run measured with the same weights
    assert metrics["acc"] == pytest.approx(saved["acc"]) and metrics["loss"] == pytest.approx(saved["loss"])
    with pytest.raises(CheckpointError, match="--eval-only needs weights"):
        cfg3 = toy_config()
        cfg3.output_dir = str(tmp_path / "empty")
        Trainer(cfg3, toy_task_cls(cfg3)).evaluate()


def test_early_stopping(toy_task_cls, toy_config):
    cfg = toy_config(epochs=20, early_stop_patience=2, lr=0.0, scheduler="constant")  # lr 0: never improves
    summary = Trainer(cfg, toy_task_cls(cfg)).fit()
    assert summary["stopped_early"] and summary["epochs_completed"] == 3 and summary["best_epoch"] == 1


def test_unknown_best_metric_is_named(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1, best_metric="top1")
    with pytest.raises(ConfigError, match=r"best_metric='top1'.*\['acc', 'loss'\]"):
        Trainer(cfg, toy_task_cls(cfg)).fit()


def test_channels_last_and_bf16_autocast_on_cpu(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1, max_steps_per_epoch=2, channels_last=True, amp="bf16")
    trainer = Trainer(cfg, toy_task_cls(cfg))
    assert trainer.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.amp_dtype == torch.bfloat16
    summary = trainer.fit()
    assert math.isfinite(summary["last"]["train/loss"])


def test_device_and_amp_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="fp16 needs CUDA"):
            resolve_amp("fp16", torch.device("cpu"))
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert resolve_amp("auto", torch.device("cpu")) is expected
    assert resolve_amp("off", torch.device("cpu")) is None
    with pytest.raises(ConfigError, match="train.amp='fp8'"):
        resolve_amp("fp8", torch.device("cpu"))


def test_no_native_bf16_when_onednn_is_capped_below_it():
    # cpuinfo still reports the bf16 instructions; oneDNN, capped at AVX2, would emulate them slowly
    code = "from tasks.engine.runtime import cpu_has_native_bf16\nprint(cpu_has_native_bf16())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"  # so amp=auto trains in fp32 there


def test_bad_train_values_fail_before_work(toy_task_cls, toy_config):
    with pytest.raises(ConfigError, match="train.accum_steps=0"):
        Trainer(toy_config(accum_steps=0), toy_task_cls(toy_config()))
    with pytest.raises(ConfigError, match=r"train.cpu_minutes=-5.0: must be >= 0"):
        Trainer(toy_config(cpu_minutes=-5.0), toy_task_cls(toy_config()))


def test_cpu_seconds_counts_ended_children():
    """Data-loader workers are child processes: their CPU time must be in the training's CPU cost."""
    before = cpu_seconds()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert cpu_seconds() - before >= 0.35


def test_cpu_time_is_logged_per_epoch_and_carried_over_a_resume(toy_task_cls, toy_config, monkeypatch):
    # A clock that advances one second per reading: a toy epoch on a fast CPU takes less than the 0.1 s
    # the log rounds to, and the clock itself is tested above.
    ticks = iter(range(10**6))
    monkeypatch.setattr("tasks.engine.trainer.cpu_seconds", lambda: float(next(ticks)))
    cfg = toy_config(epochs=2)
    Trainer(cfg, toy_task_cls(cfg)).fit()
    cfg.train.epochs = 3
    summary = Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    cpu = [r["cpu_time_s"] for r in rows if r["kind"] == "epoch"]
    assert len(cpu) == 3 and 0 < cpu[0] < cpu[1] < cpu[2]  # the resume adds to epoch 2's
    saved = load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")["loop"]["cpu_s"]
    assert summary["train_cpu_s"] == pytest.approx(saved, abs=0.1) and saved >= cpu[1]


def test_checkpoint_every_writes_last_pt_at_its_epochs_evaluations_and_the_end(
    toy_task_cls, toy_config, monkeypatch
):
    cfg = toy_config(epochs=5, eval_every=3, checkpoint_every=2)
    trainer = Trainer(cfg, toy_task_cls(cfg))
    written, write = [], trainer.keeper.write
    monkeypatch.setattr(trainer.keeper, "write", lambda ckpt: (written.append(ckpt["epoch"]), write(ckpt)))
    trainer.fit()
    assert written == [2, 3, 4, 5]  # every 2nd epoch, the evaluated epoch 3 and the last
    cfg.train.epochs = 7  # a resume from last.pt (epoch 5) continues the run
    assert Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()["epochs_completed"] == 7


def test_a_kill_between_checkpoints_resumes_from_the_last_one_written(toy_task_cls, toy_config):
    """With checkpoint_every=2 a crash in epoch 4 leaves last.pt of epoch 2; the records of epoch 3 are
    dropped on resume and written again, once."""
    cfg = toy_config(epochs=4, checkpoint_every=2, eval_every=10)
    task = toy_task_cls(cfg)
    step = task.training_step

    def crash_in_epoch_four(model, batch, device):
        if task.calls == 3 * 6:  # 6 steps per epoch: before the first step of epoch 4
            raise Crash
        return step(model, batch, device)

    task.training_step = crash_in_epoch_four
    with pytest.raises(Crash):
        Trainer(cfg, task).fit()
    assert load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")["epoch"] == 2
    Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3, 4]


def _clock_of(task, monkeypatch, eval_s: float = 0.0):
    """A CPU clock that reads one second per training step of `task` and `eval_s` per evaluation."""
    evals, evaluate = [], task.evaluate

    def counted(*args):
        evals.append(1)
        return evaluate(*args)

    task.evaluate = counted
    monkeypatch.setattr("tasks.engine.trainer.cpu_seconds", lambda: task.calls + eval_s * len(evals))


def test_cpu_minutes_fixes_the_length_after_the_timed_epoch_and_the_schedule_ends_with_it(
    toy_task_cls, toy_config, monkeypatch
):
    cfg = toy_config(epochs=20, cpu_minutes=0.5, eval_every=100, lr=0.1)  # 6 steps = 6 CPU-s an epoch
    task = toy_task_cls(cfg)
    _clock_of(task, monkeypatch)
    summary = Trainer(cfg, task).fit()
    assert summary["epochs_completed"] == 5  # 18 s after three epochs, 12 s left: two more
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    last_lr = [r["lr"] for r in rows if r["kind"] == "step"][-1]
    assert last_lr < 1e-3  # cosine over 5 epochs is at its end (over 20 it would still be near 0.09)
    assert load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")["loop"]["planned_epochs"] == 5


def test_cpu_minutes_reviews_the_length_a_quarter_of_the_way_in(toy_task_cls, toy_config, monkeypatch):
    cfg = toy_config(epochs=40, cpu_minutes=2, eval_every=100)
    task = toy_task_cls(cfg)
    # epochs 1-3 cost 6 CPU-s (the plan: 17 more, 20 in all), later ones 12 (the machine got busier)
    monkeypatch.setattr("tasks.engine.trainer.cpu_seconds", lambda: task.calls + max(0, task.calls - 18))
    assert Trainer(cfg, task).fit()["epochs_completed"] == 13  # after epoch 5: 42 s spent, 9 s an epoch
    loop = load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")["loop"]
    assert (loop["planned_epochs"], loop["length_reviewed"]) == (13, True)


def test_cpu_minutes_counts_evaluations_and_stays_within_train_epochs(toy_task_cls, toy_config, monkeypatch):
    cfg = toy_config(epochs=20, cpu_minutes=0.75, eval_every=1)
    task = toy_task_cls(cfg)
    _clock_of(task, monkeypatch, eval_s=3.0)
    summary = Trainer(cfg, task).fit()
    assert summary["epochs_completed"] == 5  # 9 CPU-s an epoch with its evaluation; 6 if it were left out
    assert summary["train_cpu_s"] <= 45
    cfg = toy_config(epochs=4, cpu_minutes=60)
    cfg.output_dir += "_long_budget"
    task = toy_task_cls(cfg)
    _clock_of(task, monkeypatch)
    assert Trainer(cfg, task).fit()["epochs_completed"] == 4


def test_a_resumed_budgeted_run_keeps_its_length(toy_task_cls, toy_config, monkeypatch):
    cfg = toy_config(epochs=20, cpu_minutes=0.5, eval_every=100)
    task = toy_task_cls(cfg)
    _clock_of(task, monkeypatch)
    step = task.training_step

    def crash_in_epoch_four(model, batch, device):
        if task.calls == 3 * 6:
            raise Crash
        return step(model, batch, device)

    task.training_step = crash_in_epoch_four
    with pytest.raises(Crash):
        Trainer(cfg, task).fit()
    resumed = toy_task_cls(cfg)
    monkeypatch.setattr("tasks.engine.trainer.cpu_seconds", lambda: 100.0 * resumed.calls)  # a slower CPU
    assert Trainer(cfg, resumed, resume="auto").fit()["epochs_completed"] == 5
