"""Every side-by-side benchmark in one run: one table of ratios, written to docs/benchmarks.md.

    python -m benchmarks --quick                      # < 5 minutes on 2 cores
    python -m benchmarks                              # full sizes
    python -m benchmarks --cls-checkpoint runs/cls/checkpoints/best.pt data.root=DIR   # + INT8 agreement
    python -m benchmarks --only det seg               # some areas
    python -m benchmarks.detection --quick            # one area with its own options (--help)

Areas: backbone, cls, det (with COCO evaluation vs pycocotools), seg, fewshot and deploy (INT8 vs fp32 on
CPU; fp16 vs fp32 on CUDA). A failing area is listed as FAILED, the others still run, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.machine import describe_machine
from benchmarks.report import SuiteResult, add_emulated_bf16_flag, format_table, render_markdown

# Suite name (the table's first column) -> module of this package.
AREAS = {
    "backbone": "backbone",
    "cls": "classification",
    "det": "detection",
    "seg": "segmentation",
    "fewshot": "fewshot",
    "deploy": "deploy",
}

_CHECKOUT = Path(__file__).resolve().parents[1]
# docs/benchmarks.md is rewritten by default only in a checkout; an installed copy prints the table.
DEFAULT_OUTPUT = _CHECKOUT / "docs" / "benchmarks.md" if (_CHECKOUT / "pyproject.toml").is_file() else None


def area_module(name: str):
    """The module of one area (``"det"`` -> ``benchmarks.detection``), imported when its turn comes."""
    return importlib.import_module(f"benchmarks.{AREAS[name]}")


def run_suites(suites: dict[str, Callable[..., list[dict]]], quick: bool, log=print) -> list[SuiteResult]:
    """Call each suite's ``run(quick=...)``; a failing suite is recorded with its error, the rest run."""
    results = []
    for name, run in suites.items():
        log(f"== {name} ...")
        start = time.perf_counter()
        try:
            rows = list(run(quick=quick))
            results.append(SuiteResult(name, rows, time.perf_counter() - start))
        except Exception as err:  # one broken benchmark must not hide the others' numbers
            log(traceback.format_exc(limit=3))
            results.append(SuiteResult(name, [], time.perf_counter() - start, f"{type(err).__name__}: {err}"))
        log(f"   {name}: {len(results[-1].rows)} rows in {results[-1].seconds:.0f} s")
    return results


def _suites(names: list[str], checkpoint: str | None, overrides: list[str]) -> dict[str, Callable]:
    """One callable per area; the module is imported inside it, so an import error fails that area only."""

    def area(name: str):
        if name == "deploy":
            return lambda quick: area_module(name).run(
                quick=quick, checkpoint=checkpoint, overrides=overrides
            )
        return lambda quick: area_module(name).run(quick=quick)

    return {name: area(name) for name in names}


def main(argv: list[str] | None = None) -> int:
    """Run the areas, print the table, write the Markdown file; 1 when an area failed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="data.* overrides for --cls-checkpoint's saved config")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    add_emulated_bf16_flag(parser)
    parser.add_argument("--only", nargs="+", choices=list(AREAS), help="run only these areas")
    parser.add_argument("--cls-checkpoint", help="trained classifier: adds INT8 top-1 agreement rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT or ""),
        help="Markdown file to write ('' = none; default: docs/benchmarks.md of a checkout)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name for name in AREAS if not args.only or name in args.only]
    machine = describe_machine()
    print(machine)
    results = run_suites(_suites(names, args.cls_checkpoint, args.overrides), args.quick)
    print(format_table(results))
    if args.output:
        command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        Path(args.output).write_text(render_markdown(results, machine, command.strip(), date))
        print(f"wrote {args.output}")
    return 1 if any(r.error for r in results) else 0
