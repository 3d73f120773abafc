"""The one timer: callables timed in rotating rounds after a warm-up, compared by per-round ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RoundTimes:
    """Seconds per call of each timed callable, one entry per timed round."""

    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        """Median seconds per call of ``name``."""
        return statistics.median(self.seconds[name])

    def ratio(self, name: str, anchor: str = "anchor") -> float:
        """Median over rounds of ``anchor`` time / ``name`` time (> 1: ``name`` is faster).

        Pairing the calls of one round cancels the slow swings in speed that a shared virtual machine goes
        through; a ratio of two separate medians does not.
        """
        pairs = zip(self.seconds[anchor], self.seconds[name])
        return statistics.median(anchor_s / name_s for anchor_s, name_s in pairs)


def time_rounds(
    functions: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    seed: int | None = None,
) -> RoundTimes:
    """Call every function once per round, the order rotating from round to round, and time the calls.

    With two functions the rounds go AB BA AB ...; with more, ABC BCA CAB ... The second call of a round
    finds caches warmed by the first, so every function goes first equally often, and load from other
    processes hits all of them alike.

    Args:
        functions: name -> callable without arguments, in the order of the first round.
        rounds: timed rounds.
        warmup: untimed rounds before them (lazy compilation, oneDNN's kernel planning, allocator growth).
        clock: seconds counter: ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU
            time, which on a machine shared with other jobs measures the work rather than the waiting).
        seed: reseed torch's RNG before every call, so random draws inside the calls (a detector's RPN and
            RoI samplers) are the same for every function and equal weights do equal work.

    Returns:
        The seconds of every call, by name.
    """
    names = list(functions)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        timed = index >= warmup
        shift = (index - warmup) % len(names) if timed else 0
        for name in names[shift:] + names[:shift]:
            if seed is not None:
                torch.manual_seed(seed)
            start = clock()
            functions[name]()
            if timed:
                seconds[name].append(clock() - start)
    return RoundTimes(seconds)
