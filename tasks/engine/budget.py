"""Sizing a run to a CPU-time budget (`train.cpu_minutes`): how many epochs fit, decided once, early.

A recipe written in epochs costs three times as much on a CPU without native bf16 as on one with it, so a
budget in epochs is right for one kind of machine only. With `train.cpu_minutes` the trainer times the
second and third epochs (the first pays one-off costs: oneDNN kernel selection, caches; one epoch alone
varied by a third on a 2-core machine) and fixes the run's length after the third, with `train.epochs` as
the most it may train. Two epochs are a noisy sample (on a shared 2-core machine epochs of one run differ
by 10 %), so the length is reviewed once, a quarter of the way in, from the mean of every epoch timed so
far. Each time the schedule is rebuilt for the length, so cosine and step decays end where the run ends;
the length is saved with the loop state, so a resumed run keeps it.
"""

from __future__ import annotations

import math

PLAN_AFTER_EPOCH = 3
REVIEW_FRACTION = 0.25


def review_epoch(planned: int) -> int:
    """The epoch after which a run planned at `planned` epochs reviews its length."""
    return max(PLAN_AFTER_EPOCH + 1, math.ceil(planned * REVIEW_FRACTION))


def epochs_within_budget(budget_s: float, spent_s: float, epoch_s: float, done: int, cap: int) -> int:
    """Epochs the run trains in all: `done` plus as many more `epoch_s`-long epochs as the rest of
    `budget_s` holds (after `spent_s`), never fewer than `done` nor more than `cap`."""
    if epoch_s <= 0:
        return cap
    more = math.floor(max(0.0, budget_s - spent_s) / epoch_s)
    return max(done, min(cap, done + more))
