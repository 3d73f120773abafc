"""The one line that says where the numbers come from, printed above every benchmark table."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torchvision

from tasks.engine.runtime import cpu_has_native_bf16

# The instruction sets that decide the fast paths: AVX-512 for oneDNN's fp32 kernels, AVX512-BF16 and AMX
# for native bf16 (without them oneDNN emulates bf16 and autocast is slower than fp32).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return []


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor name elsewhere)."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of ``ISA_FLAGS`` the CPU reports, in that order (empty where /proc/cpuinfo is missing)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            found = set(line.split(":", 1)[1].split())
            return [flag for flag in ISA_FLAGS if flag in found]
    return []


def describe_machine() -> str:
    """CPU model, CPUs and torch threads, ISA, native bf16, GPU and library versions, on one line."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = ", ".join(cpu_flags()) or "none found"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_model()}; {cpus} CPUs, {torch.get_num_threads()} torch threads; "
        f"ISA {torch.backends.cpu.get_cpu_capability()} (flags: {flags}); "
        f"native bf16: {'yes' if cpu_has_native_bf16() else 'no'}; {gpu}; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
