"""Device, precision, seeding and distributed-process helpers used by the Trainer."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import resource
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .config import ConfigError

log = logging.getLogger("tasks.engine")

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bf16 matmuls natively (AVX512-BF16 or AMX).

    `torch.ops.mkldnn._is_mkldnn_bf16_supported()` also returns True on plain AVX-512 cores, where oneDNN
    emulates bf16 and autocast is usually *slower* than fp32, so we look at the instruction sets instead.
    Those come from cpuinfo alone, so oneDNN must also be allowed to use them: with `ONEDNN_MAX_CPU_ISA=AVX2`
    (a user capping the kernels, or emulating an AVX2 machine) bf16 would be emulated again.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    has_instructions = any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return has_instructions and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Map the config's device string (auto | cpu | cuda | cuda:N) to a torch.device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} requested but CUDA is not available (use device=cpu or auto)")
        if name == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(name)
    if name != "cpu":
        raise ConfigError(f"device={name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Pick the autocast dtype (None = full fp32) from train.amp and the device."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"train.amp={amp!r}: expected one of {list(AMP_CHOICES)}")
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs CUDA; on CPU use bf16 or off")
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for `dtype`, or a no-op context for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; with `deterministic`, also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls (CUDA docs, "Reproducibility").
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (world_size 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dist.is_initialized():
        return DistInfo(rank, local_rank, world_size, False)
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, local_rank, world_size, True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Send a picklable object from rank `src` to every rank."""
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_objects(obj, info: DistInfo) -> list:
    """All-gather a picklable object (list indexed by rank)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads and of its children that have ended.

    The children are the data-loader workers: they end with each epoch (no persistent workers), so
    between two epochs this is everything the training has cost on the CPU, which is how the learning
    curves in docs/results.md are measured against a CPU budget.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
