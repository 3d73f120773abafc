"""python -m benchmarks: every area's rows in one table, failures reported, docs file rendered."""

from __future__ import annotations

import importlib

import pytest

from benchmarks import deploy, suite
from benchmarks.machine import describe_machine
from benchmarks.report import SuiteResult, format_table, render_markdown, row


def _good(quick: bool = False) -> list[dict]:
    return [row("thing fp32", 120.0, 60.0, "img/s", 2.0, 1.5)]


def _broken(quick: bool = False) -> list[dict]:
    raise RuntimeError("boom")


def test_a_failing_suite_is_reported_and_the_others_still_run():
    results = suite.run_suites({"broken": _broken, "good": _good}, quick=True, log=lambda *_: None)
    assert [r.name for r in results] == ["broken", "good"]
    assert results[0].error == "RuntimeError: boom" and results[1].rows == _good()
    table = format_table(results)
    assert "| broken | FAILED: RuntimeError: boom |" in table
    assert "| good | thing fp32 | 120 | 60 | img/s | 2x | >= 1.5 |" in table
    doc = render_markdown(results, "a machine", "python -m benchmarks --quick", "2026-01-01 08:30")
    assert "- machine: a machine" in doc and "python -m benchmarks --quick" in doc and table in doc


def test_targets_and_numbers_are_written_one_way():
    rows = [
        row("text target", 1234.5, 0.5, "s", 0.25, ">= 1.0x"),
        row("no target", 0.001, 1.0, "s", 1.0, None),
    ]
    table = format_table([SuiteResult("area", rows)])
    assert "| area | text target | 1234 | 0.5 | s | 0.25x | >= 1.0x |" in table
    assert "| area | no target | 1.00e-03 | 1 | s | 1x | - |" in table


def test_machine_line_names_threads_isa_and_native_bf16():
    line = describe_machine()
    assert "torch threads" in line and "ISA " in line and "torch " in line
    assert "native bf16: yes" in line or "native bf16: no" in line


@pytest.mark.parametrize("name", list(suite.AREAS))
def test_every_area_has_run_and_main(name):
    module = suite.area_module(name)
    assert module is importlib.import_module(f"benchmarks.{suite.AREAS[name]}")
    assert callable(module.run) and callable(module.main) and module.__doc__


def test_main_writes_the_doc(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(deploy, "run", lambda quick, checkpoint, overrides: _good(quick))
    out = tmp_path / "benchmarks.md"
    assert suite.main(["--quick", "--only", "deploy", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "| deploy | thing fp32 |" in text
    assert "`python -m benchmarks --quick --only deploy" in text and "torch threads" in text
    assert "| deploy | thing fp32 |" in capsys.readouterr().out


def test_main_lists_a_failed_area_and_exits_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(deploy, "run", lambda quick, checkpoint, overrides: _broken(quick))
    out = tmp_path / "benchmarks.md"
    assert suite.main(["--quick", "--only", "deploy", "--output", str(out)]) == 1
    assert "| deploy | FAILED: RuntimeError: boom |" in out.read_text()
