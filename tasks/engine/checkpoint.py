"""Atomic checkpoint files and RNG state capture.

A checkpoint is written to a temporary file in the same folder, fsynced and renamed over the target with
`os.replace`, so a crash (or kill -9) during the write leaves the previous file intact. Files are read with
`torch.load(weights_only=True)`: only tensors and plain containers, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backbones.errors import UserError

# Layout of the checkpoints the Trainer writes (stored with the task's name); readers refuse newer ones.
CHECKPOINT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable or incompatible; the message names the file."""


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write `obj` to `path` atomically (temp file + fsync + os.replace).

    Args:
        obj: dict of tensors / state dicts / plain Python values (weights_only-loadable).
        path: destination file; its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    # fsync the folder so the rename itself survives a power cut (POSIX; not available on Windows).
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files left by a save that was killed mid-write; returns what was removed.

    Call only while no other process writes checkpoints into `folder` (the Trainer does it on rank 0
    before training starts).
    """
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with `torch.load(weights_only=True)`.

    Raises:
        CheckpointError: naming the file when it is missing, truncated or holds non-tensor objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def extract_state_dict(obj: dict, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Return the model weights from a checkpoint dict: our "model" key, common wrappers, or a raw dict."""
    for key in ("model", "state_dict", "model_state_dict", "module"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: no tensors found (expected a state dict or a dict with 'model')")
    return state


def get_rng_state() -> dict:
    """Capture Python, NumPy and torch (CPU and CUDA) RNG states as weights_only-safe objects."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
