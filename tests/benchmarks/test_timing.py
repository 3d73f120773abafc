"""benchmarks.timing: rotating rounds after a warm-up, per-round paired ratios, reseeded calls."""

from __future__ import annotations

import pytest
import torch

from benchmarks.timing import time_rounds


class _Clock:
    """A clock that only moves when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _workload(name: str, durations: list[float], clock: _Clock, calls: list[str]):
    """A callable that logs its name and takes durations[i] seconds on its i-th call."""
    count = iter(range(len(durations)))

    def call():
        calls.append(name)
        clock.now += durations[next(count)]

    return call


def test_two_callables_alternate_and_the_warmup_is_not_timed():
    clock, calls = _Clock(), []
    functions = {
        "ours": _workload("ours", [100.0, 1.0, 1.0, 1.0], clock, calls),
        "anchor": _workload("anchor", [100.0, 2.0, 3.0, 10.0], clock, calls),
    }
    times = time_rounds(functions, rounds=3, warmup=1, clock=clock)
    assert calls == ["ours", "anchor", "ours", "anchor", "anchor", "ours", "ours", "anchor"]
    assert times.seconds == {"ours": [1.0, 1.0, 1.0], "anchor": [2.0, 3.0, 10.0]}
    assert times.median("anchor") == 3.0
    # The median of the per-round ratios (2, 3, 10), not a ratio of medians over unpaired calls.
    assert times.ratio("ours") == 3.0 and times.ratio("anchor", anchor="ours") == pytest.approx(1 / 3)


def test_more_callables_rotate_so_each_goes_first_equally_often():
    clock, calls = _Clock(), []
    functions = {name: _workload(name, [1.0] * 4, clock, calls) for name in "abc"}
    time_rounds(functions, rounds=3, warmup=1, clock=clock)
    rounds = ["".join(calls[i : i + 3]) for i in range(0, len(calls), 3)]
    assert rounds == ["abc", "abc", "bca", "cab"]


def test_seed_gives_every_call_the_same_random_draws():
    draws: dict[str, list[float]] = {"a": [], "b": []}
    functions = {name: (lambda name=name: draws[name].append(torch.rand(1).item())) for name in draws}
    time_rounds(functions, rounds=2, warmup=0, seed=0)
    assert len(set(draws["a"] + draws["b"])) == 1
    time_rounds(functions, rounds=2, warmup=0)
    assert len(set(draws["a"] + draws["b"])) > 1
