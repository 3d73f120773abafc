"""Putting a checkpoint's weights into a model, with a report and refusals that name what does not fit.

Three uses, three rules:
- `--resume` and `--eval-only` need the very network the checkpoint holds: its recorded
  `model_signature` must equal this run's and every tensor must fit (`strict`).
- `--weights` initialises a model for fine-tuning: a tensor of another shape (a head of another size) is
  left at its initial value with a message, but tensors with no place in the model, or model tensors the
  checkpoint lacks, mean another architecture and are an error unless the user asks for a partial load.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, extract_state_dict, load_checkpoint
from .resize import resize_to_state_dict

log = logging.getLogger("tasks.engine")


def signature_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """`key: checkpoint=A config=B` for every leaf that differs between two nested signatures."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += signature_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: checkpoint={a!r} config={b!r}")
    return diffs


def check_signature(checkpoint: dict, signature: dict, path: str | Path, purpose: str) -> None:
    """Refuse a checkpoint whose recorded model config differs from this run's (resume / eval).

    Checkpoints without a signature (plain state dicts) pass; the strict load then checks the tensors.
    """
    saved = checkpoint.get("model_signature")
    if saved is None or saved == signature:
        return
    diffs = "; ".join(signature_diff(saved, signature)) or "different structure"
    action = "resume from" if purpose == "resume" else "evaluate"
    raise CheckpointError(
        f"refusing to {action} {path}: its model config differs from this run ({diffs}). "
        "Set the same model keys, or use --weights to initialise a new run from it."
    )


def model_state(checkpoint: dict, path: str | Path, use_ema: bool) -> dict[str, torch.Tensor]:
    """The weights to use from a checkpoint: its EMA weights when asked for and present, else the model's."""
    if use_ema and isinstance(checkpoint.get("ema"), dict):
        return extract_state_dict(checkpoint["ema"], path)
    return extract_state_dict(checkpoint, path)


def _names(keys: list[str], limit: int = 6) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_into(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, *, strict: bool, partial: bool = False
) -> dict:
    """Copy matching tensors of `state` into `model` and report what happened.

    Args:
        model: the (unwrapped) model.
        state: the checkpoint's tensors.
        path: for messages.
        strict: every model tensor must be filled and every checkpoint tensor used (resume, eval).
        partial: (not strict) load what matches and only log the rest.

    Returns:
        Report dict with lists "loaded", "missing", "unexpected", "shape_mismatch".

    Raises:
        CheckpointError: nothing matched, or tensors are missing / unexpected when not allowed.
    """
    own = model.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = {
        "loaded": sorted(loadable),
        "missing": sorted(k for k in own if k not in state),
        "unexpected": sorted(k for k in state if k not in own),
        "shape_mismatch": sorted(k for k in state if k in own and own[k].shape != state[k].shape),
    }
    if not loadable:
        raise CheckpointError(f"{path}: no tensor matches the model (first keys: {list(state)[:5]})")
    problems = [
        f"{len(report['unexpected'])} checkpoint tensors have no place in this model "
        f"({_names(report['unexpected'])})"
        if report["unexpected"]
        else "",
        f"{len(report['missing'])} model tensors are not in the checkpoint ({_names(report['missing'])})"
        if report["missing"]
        else "",
        f"{len(report['shape_mismatch'])} tensors have another shape ({_names(report['shape_mismatch'])})"
        if strict and report["shape_mismatch"]
        else "",
    ]
    problems = [p for p in problems if p]
    if problems and (strict or not partial):
        hint = "" if strict else " Pass --partial-load to load only the matching tensors."
        raise CheckpointError(
            f"{path} does not fit this model: {'; '.join(problems)}. Is it a checkpoint of another "
            f"architecture?{hint}"
        )
    model.load_state_dict(loadable, strict=False)
    log.info(
        "weights %s: loaded %d tensors, %d missing, %d unexpected, %d shape mismatches%s",
        path,
        len(report["loaded"]),
        len(report["missing"]),
        len(report["unexpected"]),
        len(report["shape_mismatch"]),
        f" (left at their initial values: {_names(report['shape_mismatch'])})"
        if report["shape_mismatch"]
        else "",
    )
    return report


def load_weights_into(
    model: nn.Module,
    path: str | Path,
    strict: bool = False,
    partial: bool = False,
    use_ema: bool = False,
    checkpoint: dict | None = None,
) -> dict:
    """Initialise `model` from a checkpoint or state-dict file (see `load_state_into` for the rules).

    Args:
        model: the (unwrapped) model.
        path: our checkpoint (uses its "model" entry, or "ema" with `use_ema`) or any torch.save'd state dict.
        strict: require an exact fit (used by --eval-only).
        partial: allow missing and unexpected tensors (--partial-load).
        use_ema: take the checkpoint's EMA weights when it has them.
        checkpoint: the file's content when the caller has already read it.

    Returns:
        The load report ("loaded", "missing", "unexpected", "shape_mismatch").
    """
    if checkpoint is None:
        checkpoint = load_checkpoint(path)
    state = model_state(checkpoint, path, use_ema)
    if checkpoint.get("pruned"):
        # Pruned widths are not expressible in the config: resize the configured layers to the saved
        # tensors first (tools/prune.py writes this flag), so fine-tuning starts from the pruned network.
        resize_to_state_dict(model, state)
    return load_state_into(model, state, path, strict=strict, partial=partial)
