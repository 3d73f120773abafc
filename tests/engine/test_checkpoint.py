from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tasks.engine.checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files, save_checkpoint


def test_round_trip_and_weights_only(tmp_path):
    obj = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "metrics": {"acc": 0.5}}
    save_checkpoint(obj, tmp_path / "sub" / "last.pt")
    loaded = load_checkpoint(tmp_path / "sub" / "last.pt")
    assert torch.equal(loaded["model"]["w"], obj["model"]["w"]) and loaded["epoch"] == 3
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]  # no temp file left


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint({"w": torch.ones(1000)}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(tmp_path / "truncated.pt")


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def exploding_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_kill_during_write_leaves_previous_checkpoint_loadable(tmp_path):
    """kill -9 while the new checkpoint is half written: last.pt is still the previous, complete one."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from tasks.engine.checkpoint import save_checkpoint
        save_checkpoint({{"step": 1, "w": torch.ones(10)}}, {str(path)!r})
        real_save = torch.save
        def slow_save(obj, handle):
            handle.write(b"x" * 100000)  # part of the file is on disk ...
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)               # ... when the process is killed
            real_save(obj, handle)
        torch.save = slow_save
        save_checkpoint({{"step": 2, "w": torch.zeros(10)}}, {str(path)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
        assert temps and temps[0].stat().st_size >= 100000  # the new checkpoint was mid-write
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(10))
    assert remove_stale_temp_files(tmp_path) == temps  # the half-written file is cleaned up
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    # the next save works and replaces the file
    time.sleep(0.01)
    save_checkpoint({"step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
