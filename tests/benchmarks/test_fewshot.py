"""benchmarks.fewshot: row format and the identical-predictions check (speed is not asserted here)."""

from __future__ import annotations

import torch

from benchmarks import fewshot as bench


def test_benchmark_rows_and_identical_predictions(monkeypatch):
    torch.set_num_threads(1)
    rows = bench.run(quick=True, episodes=12)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) >= {"name", "ours", "anchor", "unit", "ratio", "target"} and row["target"] == 50.0
    assert row["identical_predictions"] == "12/12 episodes" and row["ours"] > 0 and row["anchor"] > 0

    # The check is real: an anchor that disagrees once makes run() fail.
    original = bench.easyfsl_style_loop

    def off_by_one(net, images, episodes):
        predictions = original(net, images, episodes)
        if len(predictions) > 3:  # not the 2-episode warm-up
            predictions[3] = (predictions[3] + 1) % 5
        return predictions

    monkeypatch.setattr(bench, "easyfsl_style_loop", off_by_one)
    try:
        bench.run(quick=True, episodes=6)
    except AssertionError as error:
        assert "predictions differ in 1 of 6 episodes (first: 3)" in str(error)
    else:
        raise AssertionError("a differing anchor was not detected")
    assert torch.get_num_threads() == 1
