"""benchmarks.deploy's INT8 agreement rows on a trained checkpoint (here for the deploy fixtures)."""

from __future__ import annotations

import pytest

from benchmarks import deploy


@pytest.mark.slow
def test_int8_agreement_rows_on_a_trained_checkpoint(cls_checkpoint):
    rows = deploy.agreement_rows(cls_checkpoint, [], quick=True)
    agreement, speed = rows
    assert agreement["unit"] == "%" and 90.0 <= agreement["ours"] <= 100.0
    assert agreement["ratio"] == pytest.approx(agreement["ours"] / 100)
    assert speed["ours"] > 0 and speed["anchor"] > 0
