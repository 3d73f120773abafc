"""Median wall time of callables, measured alternately so machine-load drift hits both sides alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def median_times(functions: Sequence[Callable[[], object]], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Median seconds per call of each function; calls are interleaved (ABCABC...)."""
    with torch.inference_mode():
        for _ in range(warmup):
            for function in functions:
                function()
        times: list[list[float]] = [[] for _ in functions]
        for _ in range(repeats):
            for function, bucket in zip(functions, times):
                start = time.perf_counter()
                function()
                bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]
