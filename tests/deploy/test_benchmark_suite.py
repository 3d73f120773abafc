"""tools/benchmark.py: every suite's rows in one table, failures reported, docs file rendered."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tasks.deploy import benchmark as deploy_benchmark
from tasks.deploy.suite import format_table, load_run, render_markdown, run_suites

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str):
    return importlib.import_module(f"tools.{name}")  # the repo root is on pytest's pythonpath


def _good(quick: bool = False) -> list[dict]:
    return [dict(name="thing fp32", ours=120.0, anchor=60.0, unit="img/s", ratio=2.0, target=1.5)]


def _broken(quick: bool = False) -> list[dict]:
    raise RuntimeError("boom")


def test_a_failing_suite_is_reported_and_the_others_still_run():
    results = run_suites({"broken": _broken, "good": _good}, quick=True, log=lambda *_: None)
    assert [r.name for r in results] == ["broken", "good"]
    assert results[0].error == "RuntimeError: boom" and results[1].rows == _good()
    table = format_table(results)
    assert "| broken | FAILED: RuntimeError: boom |" in table
    assert "| good | thing fp32 | 120 | 60 | img/s | 2x | >= 1.5 |" in table
    doc = render_markdown(results, "a machine", "python tools/benchmark.py --quick", "2026-01-01 08:30")
    assert "- machine: a machine" in doc and "python tools/benchmark.py --quick" in doc and table in doc


def test_every_existing_benchmark_script_exposes_run():
    scripts = sorted((ROOT / "tools").glob("benchmark_*.py"))
    assert scripts, "no tools/benchmark_*.py found"
    for script in scripts:
        assert callable(load_run(script)), script
    assert load_run(ROOT / "tools" / "benchmark_nothing.py") is None


def test_tool_writes_the_doc(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(deploy_benchmark, "run", lambda quick, checkpoint, overrides: _good(quick))
    out = tmp_path / "benchmarks.md"
    assert _tool("benchmark").main(["--quick", "--only", "deploy", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "| deploy | thing fp32 |" in text
    assert "--quick --only deploy" in text and "threads" in text  # command and machine description
    assert "| deploy | thing fp32 |" in capsys.readouterr().out


@pytest.mark.slow
def test_int8_agreement_rows_on_a_trained_checkpoint(cls_checkpoint):
    rows = deploy_benchmark.agreement_rows(cls_checkpoint, [], quick=True)
    agreement, speed = rows
    assert agreement["unit"] == "%" and 90.0 <= agreement["ours"] <= 100.0
    assert agreement["ratio"] == pytest.approx(agreement["ours"] / 100)
    assert speed["ours"] > 0 and speed["anchor"] > 0
