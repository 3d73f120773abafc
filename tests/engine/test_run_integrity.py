"""The state around the weights: run folders, resume with a changed config, checkpoint fit, kill order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tasks.engine import (
    CheckpointError,
    ConfigError,
    Trainer,
    checkpointing,
    load_checkpoint,
    runtime,
    save_checkpoint,
)
from tasks.engine.cli import run_training_tool
from tasks.engine.optim import build_scheduler
from tasks.engine.run_folder import RunFolderError


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


# ------------------------------------------------------------------------------------- run folders


def test_a_second_run_into_a_run_folder_is_refused_and_leaves_it_intact(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1)
    Trainer(cfg, toy_task_cls(cfg)).fit()
    run = Path(cfg.output_dir)
    before = {p.name: p.read_bytes() for p in [run / "metrics.jsonl", run / "checkpoints" / "best.pt"]}
    with pytest.raises(RunFolderError, match=r"already holds a finished run.*--resume.*--overwrite"):
        Trainer(cfg, toy_task_cls(cfg)).fit()
    assert {
        p.name: p.read_bytes() for p in [run / "metrics.jsonl", run / "checkpoints" / "best.pt"]
    } == before


def test_overwrite_replaces_the_run_and_starts_a_clean_history(toy_task_cls, toy_config):
    cfg = toy_config(epochs=2, keep_top_k=2)
    Trainer(cfg, toy_task_cls(cfg)).fit()
    cfg.train.epochs, cfg.train.keep_top_k = 1, 0
    Trainer(cfg, toy_task_cls(cfg), overwrite=True).fit()
    run = Path(cfg.output_dir)
    assert [r["epoch"] for r in records(run) if r["kind"] == "epoch"] == [1]  # one run, not two mixed
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_the_tool_says_how_to_proceed(tmp_path, toy_task_cls, toy_config_cls, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(
        "device: cpu\ntrain:\n  epochs: 1\n  num_workers: 0\n  plots: false\n  tensorboard: false\n"
    )
    args = [str(config), "--output-dir", str(tmp_path / "run")]
    assert run_training_tool(toy_task_cls, toy_config_cls, args) == 0
    capsys.readouterr()
    assert run_training_tool(toy_task_cls, toy_config_cls, args) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--resume" in err and "--overwrite" in err
    assert run_training_tool(toy_task_cls, toy_config_cls, [*args, "--overwrite"]) == 0
    assert run_training_tool(toy_task_cls, toy_config_cls, [*args, "--resume", "train.epochs=2"]) == 0


# ------------------------------------------------------------------------------------------ resume


def test_resume_follows_the_new_schedule(toy_task_cls, toy_config):
    """Resuming a finished 2-epoch cosine run with epochs=4 trains at the 4-epoch schedule's lr."""
    cfg = toy_config(epochs=2, scheduler="cosine", lr=0.1)
    first = Trainer(cfg, toy_task_cls(cfg))
    first.fit()
    trained = weights(first.model)
    cfg.train.epochs = 4
    resumed = Trainer(cfg, toy_task_cls(cfg), resume="auto")
    summary = resumed.fit()
    assert summary["global_step"] == 24
    assert not torch.equal(weights(resumed.model), trained)  # lr 0 left them bit-identical before
    expected = build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), cfg.train, 6)
    steps = {r["step"]: r["lr"] for r in records(Path(cfg.output_dir)) if r["kind"] == "step"}
    for step in (13, 18, 24):
        assert steps[step] == pytest.approx(expected._get_lr(step - 1)[0], rel=1e-6), step
    assert steps[13] > 0.04  # the new cosine is half way down, not at its end


def test_resume_keeps_the_new_optimizer_settings(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1, weight_decay=1e-4)
    Trainer(cfg, toy_task_cls(cfg)).fit()
    cfg.train.epochs, cfg.train.weight_decay, cfg.train.momentum = 2, 0.05, 0.5
    resumed = Trainer(cfg, toy_task_cls(cfg), resume="auto")
    resumed.fit()
    decays = sorted({g["weight_decay"] for g in resumed.optimizer.param_groups})
    assert decays == [0.0, 0.05] and {g["momentum"] for g in resumed.optimizer.param_groups} == {0.5}


def test_resumed_steps_are_not_logged_twice(toy_task_cls, toy_config):
    cfg = toy_config(epochs=2, checkpoint_every_steps=4)
    task = toy_task_cls(cfg)
    step = task.training_step

    def crash_after_5(model, batch, device):
        if task.calls == 5:
            raise KeyboardInterrupt  # like a Ctrl-C: steps 1..5 are logged, last.pt is at step 4
        return step(model, batch, device)

    task.training_step = crash_after_5
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, task).fit()
    Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()
    step_rows = [r["step"] for r in records(Path(cfg.output_dir)) if r["kind"] == "step"]
    assert step_rows == list(range(1, 13))


# ------------------------------------------------------------------------------- checkpoint fit


def test_eval_only_refuses_a_checkpoint_of_another_model(toy_task_cls, toy_config, tmp_path):
    cfg = toy_config(epochs=1, max_steps_per_epoch=1)
    cfg.model.width = 16
    Trainer(cfg, toy_task_cls(cfg)).fit()
    best = str(Path(cfg.output_dir) / "checkpoints" / "best.pt")
    other = toy_config()
    other.output_dir = str(tmp_path / "eval")
    with pytest.raises(CheckpointError, match=r"refusing to evaluate.*width: checkpoint=16 config=8"):
        Trainer(other, toy_task_cls(other), weights=best).evaluate()
    # A plain state dict has no signature: the tensor check refuses it just the same.
    plain = tmp_path / "plain.pt"
    torch.save(load_checkpoint(best)["model"], plain)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        Trainer(other, toy_task_cls(other), weights=str(plain), partial_load=True).evaluate()


def test_weights_with_foreign_tensors_need_partial_load(toy_task_cls, toy_config, tmp_path):
    cfg = toy_config()
    model = toy_task_cls(cfg).build_model()
    state = {**model.state_dict(), "extra.weight": torch.ones(3)}  # like layer3.5.* of a deeper ResNet
    path = tmp_path / "deeper.pt"
    save_checkpoint({"model": state}, path)
    with pytest.raises(
        CheckpointError, match=r"1 checkpoint tensors have no place.*extra.weight.*--partial-load"
    ):
        Trainer(cfg, toy_task_cls(cfg), weights=str(path))
    loaded = Trainer(cfg, toy_task_cls(cfg), weights=str(path), partial_load=True)
    assert torch.equal(loaded.model[0].weight, model[0].weight)
    # A head of another size is the normal fine-tuning case: left at its initial value, no error.
    state = {k: v for k, v in model.state_dict().items()}
    state["6.weight"] = torch.zeros(3, cfg.model.width)  # the Linear head
    save_checkpoint({"model": state}, path)
    Trainer(cfg, toy_task_cls(cfg), weights=str(path))


class Killed(BaseException):
    pass


@pytest.mark.parametrize("kill_before", ["best.pt", "last.pt"])
def test_a_kill_between_end_of_epoch_writes_leaves_a_consistent_run(
    toy_task_cls, toy_config, monkeypatch, kill_before
):
    cfg = toy_config(epochs=1)
    real_save = checkpointing.save_checkpoint

    def dying_save(obj, path):
        if Path(path).name == kill_before:
            raise Killed  # the process dies before this file is written
        real_save(obj, path)

    monkeypatch.setattr(checkpointing, "save_checkpoint", dying_save)
    with pytest.raises(Killed):
        Trainer(cfg, toy_task_cls(cfg)).fit()
    monkeypatch.setattr(checkpointing, "save_checkpoint", real_save)
    summary = Trainer(cfg, toy_task_cls(cfg), resume="auto").fit()
    best = Path(cfg.output_dir) / "checkpoints" / "best.pt"
    assert best.is_file() and load_checkpoint(best)["epoch"] == summary["best_epoch"] == 1


def test_checkpoints_record_their_task_and_its_meta(toy_task_cls, toy_config):
    cfg = toy_config(epochs=1, max_steps_per_epoch=1)
    task = toy_task_cls(cfg)
    task.checkpoint_meta = lambda: {"classes": ["neg", "pos"]}
    seen = []
    Trainer(cfg, task).fit()
    last = load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")
    assert last["task"] == {"name": "toy", "version": 1} and last["task_meta"] == {"classes": ["neg", "pos"]}
    again = toy_task_cls(cfg)
    again.adopt_checkpoint_meta = lambda meta, source, purpose: seen.append((meta, purpose))
    Trainer(cfg, again, weights=str(Path(cfg.output_dir) / "checkpoints" / "last.pt")).evaluate()
    assert seen == [({"classes": ["neg", "pos"]}, "weights"), ({"classes": ["neg", "pos"]}, "eval")]


# -------------------------------------------------------------------------------- train values


@pytest.mark.parametrize(
    ("key", "value"),
    [("lr", -0.1), ("weight_decay", -1e-4), ("momentum", 1.5), ("warmup_epochs", -1.0), ("gamma", 0.0)],
)
def test_bad_train_values_name_the_key(toy_task_cls, toy_config, key, value):
    with pytest.raises(ConfigError, match=rf"train\.{key}={value}"):
        Trainer(toy_config(**{key: value}), toy_task_cls(toy_config()))


# ------------------------------------------------------------------------------------------- bf16


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU has native bf16, as on AMX / AVX512-BF16 machines (amp=auto then picks bf16)."""
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)


def test_exactness_tests_stay_fp32_on_native_bf16_cpus(toy_task_cls, toy_config, native_bf16):
    cfg = toy_config(epochs=1)
    assert Trainer(cfg, toy_task_cls(cfg)).amp_dtype is None
    cfg.train.amp = "auto"
    assert Trainer(cfg, toy_task_cls(cfg)).amp_dtype == torch.bfloat16


def test_bf16_training_matches_fp32_within_bf16_rounding(toy_task_cls, toy_config, native_bf16):
    """amp=auto on a native-bf16 CPU trains in bf16: same updates as fp32 up to bf16 rounding."""
    results = {}
    for amp in ("off", "auto"):
        cfg = toy_config(epochs=1, max_steps_per_epoch=3, lr=0.1, scheduler="constant", amp=amp)
        cfg.output_dir += f"_{amp}"
        trainer = Trainer(cfg, toy_task_cls(cfg))
        summary = trainer.fit()
        results[amp] = (weights(trainer.model), summary["amp"])
    assert results["auto"][1] == "torch.bfloat16" and results["off"][1] == "off"
    fp32, bf16 = results["off"][0], results["auto"][0]
    assert not torch.equal(fp32, bf16)  # bf16 really ran
    assert torch.allclose(fp32, bf16, atol=2e-2, rtol=2e-2)
