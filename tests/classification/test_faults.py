"""Process-level faults: kill -9 mid-run then --resume auto, and two-process DDP on CPU (gloo)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "train_cls.py"
CONFIG = str(ROOT / "configs" / "classification" / "resnet18_imagefolder.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def load_tool():
    spec = importlib.util.spec_from_file_location("train_cls_faults", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


train_cls = load_tool()


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst <= atol, worst


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_auto_reaches_the_same_weights(tmp_path, make_folder, tiny):
    root = make_folder(tmp_path / "data", per_class=6, size=24)
    args = tiny(
        root,
        tmp_path / "placeholder",
        "data.val_fraction=0.34",  # 2 val + 4 train images per class: 2 batches of 4 per epoch
        "train.epochs=3",
        "train.checkpoint_every_steps=1",
        "train.deterministic=true",
        "model.dropout=0.2",
        "data.augment.policy=photo",
        "train.lr=0.05",
    )
    args = [a for a in args if not a.startswith("output_dir=")]

    reference = tmp_path / "reference"
    assert train_cls([CONFIG, *args, "--output-dir", str(reference)]) == 0

    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, str(TOOL), CONFIG, *args, "--output-dir", str(run)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Every atomic write gives last.pt a new inode: kill after the second one (step 2 of 6).
        inodes: set[int] = set()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and len(inodes) < 2:
            try:
                inodes.add(last.stat().st_ino)
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        assert proc.poll() is None, "the training process ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)
    assert 2 <= killed_at["step"] < 6 and not (run / "summary.json").exists()

    assert train_cls([CONFIG, *args, "--output-dir", str(run), "--resume", "auto"]) == 0
    final = load_checkpoint(last)
    expected = load_checkpoint(reference / "checkpoints" / "last.pt")
    assert final["step"] == expected["step"] == 6
    assert_same_weights(final["model"], expected["model"], atol=1e-5)
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_first_step(tmp_path, make_folder, tiny):
    """2 ranks x batch 4 == 1 process x batch 8 for the first SGD step (lr=1, no momentum/decay: the
    weight change *is* the gradient). BatchNorm runs on its running statistics
    (model.backbone.norm_eval=true): torch's SyncBatchNorm has no CPU kernel, and per-rank batch
    statistics would differ from the single-process batch by design. fp32 (train.amp=off): on CPUs with
    native bf16, amp=auto would compare bf16 rounding."""
    root = make_folder(tmp_path / "data", per_class=8, size=24)
    common = tiny(
        root,
        tmp_path / "placeholder",
        "data.val_fraction=0",
        "data.augment.policy=none",
        "model.dropout=0",
        "model.backbone.norm_eval=true",
        "model.label_smoothing=0",
        "train.optimizer=sgd",
        "train.lr=1.0",
        "train.momentum=0",
        "train.weight_decay=0",
        "train.scheduler=constant",
        "train.max_steps_per_epoch=1",
        "train.deterministic=true",
    )
    common = [a for a in common if not a.startswith(("output_dir=", "train.batch_size="))]

    single = tmp_path / "single"
    assert train_cls([CONFIG, *common, "train.batch_size=8", "--output-dir", str(single)]) == 0

    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(TOOL),
        CONFIG,
        *common,
        "train.batch_size=4",
        "--output-dir",
        str(ddp),
    ]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]

    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["last.pt"]  # one set, rank 0 only
    rows = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["step", "epoch"]
    ckpt = load_checkpoint(ddp / "checkpoints" / "last.pt")
    assert len(ckpt["rng"]) == 2 and ckpt["step"] == 1

    # The initial weights: the tool seeds with train.seed before building the model.
    from tasks.classification import ClassificationConfig, ClassificationTask
    from tasks.engine import load_config
    from tasks.engine.runtime import seed_everything

    cfg = load_config(CONFIG, [*common, "train.batch_size=8"], ClassificationConfig)
    seed_everything(cfg.train.seed)
    initial = ClassificationTask(cfg).build_model().state_dict()

    ours = ckpt["model"]
    reference = load_checkpoint(single / "checkpoints" / "last.pt")["model"]
    step = float((reference["head.fc.weight"] - initial["head.fc.weight"]).abs().max())
    assert step > 1e-3  # the step is not trivially small compared with the tolerance
    assert_same_weights(ours, reference, atol=1e-5)  # identical weights after one step == identical gradients
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2
