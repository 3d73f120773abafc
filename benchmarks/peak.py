"""This machine's measured matmul peak, and what share of it a model reaches (the utilisation column).

The peak is the best of a few timed 2048 x 2048 x 2048 GEMMs in the dtype of the row, measured once per
process with the same torch threads as the rows, in both of torch's CPU GEMM libraries: ``torch.mm``
(MKL or OpenBLAS) and a channels-last 1x1 convolution (oneDNN, which runs the models' convolutions). On AMD
CPUs MKL does not use its fastest kernels, so oneDNN's GEMM is the higher of the two there: the ceiling
is what this CPU reaches, not a datasheet figure. A model's FLOPs come from torch's FlopCounterMode
(convolutions and matmuls, 2 x MACs; BatchNorm, activations and pooling are not counted), so 100% is the
rate at which the machine could do the model's arithmetic if it were all one large GEMM.
"""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

from tasks.deploy.analysis import flop_counts

GEMM_SIZE = 2048
# A training step does the forward FLOPs once and about twice as many in backward (input and weight
# gradients): the usual 3x rule, used for the training rows.
TRAIN_FLOPS_FACTOR = 3
MEASURED: dict[str, float] = {}  # dtype name -> FLOP/s, for the report's machine lines


@functools.cache
def gemm_peak(dtype: torch.dtype = torch.float32, size: int = GEMM_SIZE, rounds: int = 5) -> float:
    """FLOP/s of the fastest of ``rounds`` ``size``-cubed GEMMs in ``dtype``, MKL's or oneDNN's."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    # The same GEMM as a convolution: (1, size, 32, size / 32) pixels times a (size, size) 1x1 kernel.
    pixels = torch.randn(1, size, 32, size // 32).to(dtype).contiguous(memory_format=torch.channels_last)
    kernel = b.reshape(size, size, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = min(
            _best_seconds(lambda: torch.mm(a, b), rounds),
            _best_seconds(lambda: torch.nn.functional.conv2d(pixels, kernel), rounds),
        )
    if size == GEMM_SIZE:  # the peak the rows use
        MEASURED[str(dtype).removeprefix("torch.")] = 2 * size**3 / seconds
    return 2 * size**3 / seconds


def _best_seconds(function, rounds: int) -> float:
    """The fastest of ``rounds`` timed calls after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def peak_line() -> str:
    """The peaks measured so far in this process, e.g. ``float32 210 GFLOP/s, bfloat16 35 GFLOP/s``."""
    return (
        ", ".join(f"{name} {flops / 1e9:.0f} GFLOP/s" for name, flops in MEASURED.items()) or "none measured"
    )


def forward_flops(model: nn.Module, example) -> int:
    """FLOPs of one forward pass of ``model`` on ``example`` (a batch tensor or a detector's image list)."""
    return flop_counts(model, example)[1]


def utilisation(items_per_second: float, flops_per_item: float, dtype: torch.dtype) -> float:
    """The share of this machine's ``dtype`` GEMM peak that ``flops_per_item`` at that rate amounts to."""
    return items_per_second * flops_per_item / gemm_peak(dtype)
