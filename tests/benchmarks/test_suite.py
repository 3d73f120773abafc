"""python -m benchmarks: every area's rows in one table, failures reported, docs file rendered."""

from __future__ import annotations

import importlib

import pytest
import torch

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
    assert "| good | thing fp32 | 120 | 60 | img/s | 2x | - | >= 1.5 |" in table
    doc = render_markdown(results, "a machine", "python -m benchmarks --quick", "2026-01-01 08:30")
    assert "- machine: a machine" in doc and "python -m benchmarks --quick" in doc and table in doc


def test_targets_and_numbers_are_written_one_way():
    rows = [
        row("text target", 1234.5, 0.5, "s", 0.25, ">= 1.0x"),
        row("no target", 0.001, 1.0, "s", 1.0, None),
    ]
    table = format_table([SuiteResult("area", rows)])
    assert "| area | text target | 1234 | 0.5 | s | 0.25x | - | >= 1.0x |" in table
    assert "| area | no target | 1.00e-03 | 1 | s | 1x | - | - |" in table


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


def test_bf16_targets_are_not_applicable_without_native_bf16(monkeypatch):
    from benchmarks import report

    monkeypatch.setattr(report, "cpu_has_native_bf16", lambda: False)
    assert report.bf16_target(">= 2.0") == "n/a (no native bf16)"
    assert report.bf16_target(2.0, fp32_target=1.0) == "n/a (no native bf16); fp32 >= 1.0"
    monkeypatch.setattr(report, "cpu_has_native_bf16", lambda: True)
    assert report.bf16_target(2.0, fp32_target=1.0) == 2.0


def test_coco_eval_row_checks_identical_numbers():
    from benchmarks.detection import eval_row

    result = eval_row(20, rounds=1)
    assert "numbers identical: True" in result["name"] and "faster-coco-eval" in result["name"]
    assert result["ours"] > 0 and result["anchor"] > 0 and result["unit"] == "s"


def test_deploy_benchmark_builds_our_resnet50_with_torchvision_weights():
    import torchvision

    from benchmarks.deploy import _ours_from_torchvision

    anchor = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_ours_from_torchvision(anchor)(x), anchor(x))


def test_utilisation_is_model_flops_over_the_measured_gemm_peak():
    from benchmarks import peak

    flops_per_s = peak.gemm_peak(torch.float32)
    assert flops_per_s > 1e9 and "float32" in peak.peak_line()
    # Running at the peak's own rate on items of 1 GFLOP each is 100% by construction.
    assert peak.utilisation(flops_per_s / 1e9, 1e9, torch.float32) == pytest.approx(1.0)
    table = format_table([SuiteResult("x", [row("r", 1.0, 1.0, "img/s", 1.0, None, util=0.42)])])
    assert "| 42% |" in table
