"""Benchmark rows and the one table they are written in: on the terminal and in docs/benchmarks.md."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

import torch

from benchmarks.machine import describe_machine
from benchmarks.peak import GEMM_SIZE, peak_line, utilisation
from benchmarks.timing import RoundTimes
from tasks.engine.runtime import cpu_has_native_bf16

NO_NATIVE_BF16 = "n/a (no native bf16)"
# Time bf16 rows on a CPU without native bf16 too (--emulated-bf16). Off by default: oneDNN then emulates
# bf16, 3x slower than fp32 with AVX-512 and far slower with AVX2 only, which measures the emulation.
EMULATED_BF16 = {"time": False}


def measure_bf16() -> bool:
    """Whether the bf16 rows are timed: on a native-bf16 CPU, or when --emulated-bf16 asks for it."""
    return cpu_has_native_bf16() or EMULATED_BF16["time"]


def untimed_bf16_row(name: str, unit: str) -> dict:
    """The row of a bf16 path that is not timed on this CPU (see `measure_bf16`)."""
    return row(name, "-", "-", unit, NO_NATIVE_BF16, NO_NATIVE_BF16)


@dataclass
class SuiteResult:
    """Rows of one area's benchmark, its wall time, and the error if it failed."""

    name: str
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def row(name: str, ours: float, anchor: float, unit: str, ratio: float, target, **extra) -> dict:
    """One benchmark row.

    Args:
        name: what is compared (sizes included).
        ours, anchor: the two measurements, in ``unit``.
        ratio: > 1 when ours is better (faster, smaller).
        target: a number (shown as ``>= number``), a text (``">= 1.0x"``, ``"(info)"``, ``"(noise)"`` for
            control rows) or None (no target).
        extra: further facts of the row (kept in the row, not shown in the table).
    """
    return dict(name=name, ours=ours, anchor=anchor, unit=unit, ratio=ratio, target=target, **extra)


def speed_row(
    name: str,
    items: int,
    times: RoundTimes,
    target,
    unit: str = "img/s",
    ours: str = "ours",
    anchor: str = "anchor",
    flops_per_item: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """A row in items per second from a ``time_rounds`` result, with the paired per-round ratio.

    Args:
        items: images (or steps) processed by one call.
        ours, anchor: the names of the two timed callables.
        flops_per_item: the model FLOPs of one item: adds ours' utilisation of the ``dtype`` GEMM peak.
    """
    rate = items / times.median(ours)
    extra = {"util": utilisation(rate, flops_per_item, dtype)} if flops_per_item else {}
    return row(name, rate, items / times.median(anchor), unit, times.ratio(ours, anchor), target, **extra)


def bf16_target(target, fp32_target=None):
    """The target of a row that needs native bf16 (AMX or AVX512-BF16): kept on such CPUs; elsewhere
    ``n/a (no native bf16)``, since oneDNN emulates bf16 there and it is slower than fp32 by design, plus
    the fp32 target that the row must still meet when its default path falls back to fp32."""
    if cpu_has_native_bf16():
        return target
    return NO_NATIVE_BF16 + (f"; fp32 {report_target(fp32_target)}" if fp32_target is not None else "")


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    return f"{value:.0f}" if magnitude >= 1000 else f"{value:.3g}" if magnitude >= 0.01 else f"{value:.2e}"


def report_target(value) -> str:
    """A row's target as the table shows it."""
    if value is None or value == "":
        return "-"
    return f">= {value}" if isinstance(value, (int, float)) else str(value)


def format_table(results: list[SuiteResult]) -> str:
    """One Markdown table over all areas: suite, benchmark, ours, anchor, unit, ratio, util., target."""
    lines = [
        "| suite | benchmark | ours | anchor | unit | ratio | util. | target |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for result in results:
        if result.error:
            lines.append(f"| {result.name} | FAILED: {result.error} | | | | | | |")
        for r in result.rows:
            ratio = r.get("ratio")
            ratio_text = f"{_number(ratio)}x" if isinstance(ratio, (int, float)) else str(ratio)
            util = f"{100 * r['util']:.0f}%" if "util" in r else "-"
            lines.append(
                f"| {result.name} | {r.get('name', '?')} | {_number(r.get('ours'))} | "
                f"{_number(r.get('anchor'))} | {r.get('unit', '')} | {ratio_text} | {util} | "
                f"{report_target(r.get('target'))} |"
            )
    return "\n".join(lines)


def render_markdown(results: list[SuiteResult], machine: str, command: str, date: str) -> str:
    """docs/benchmarks.md: how to reproduce, the machine, the table, per-area wall times."""
    times = ", ".join(f"{r.name} {r.seconds:.0f} s" for r in results)
    total = sum(r.seconds for r in results)
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Generated by `python -m benchmarks`; do not edit by hand. Reproduce with:",
            "",
            "```",
            "python -m benchmarks             # full suite (rewrites this file)",
            "python -m benchmarks --quick     # smaller sizes, under 5 minutes on 2 cores",
            "python -m benchmarks.AREA --help # one area: backbone, classification, detection, segmentation,",
            "                                 # fewshot, deploy",
            "```",
            "",
            "Each row runs ours and the anchor side by side in one process (alternating calls, medians);",
            "ratio > 1 means ours is better; util. is ours' model FLOP/s as a share of this machine's",
            "measured matmul peak in the row's dtype (benchmarks/peak.py; peaks in the machine line).",
            "Details of each row: the docstring of benchmarks/<area>.py.",
            "Why some targets are unmet on this machine, and each area's own runs:",
            "[benchmark_notes.md](benchmark_notes.md).",
            "",
            f"- command: `{command}`",
            f"- date: {date}",
            f"- machine: {machine}",
            f"- matmul peak ({GEMM_SIZE}x{GEMM_SIZE}, same threads): {peak_line()}",
            f"- wall time: {total:.0f} s ({times})",
            "",
            format_table(results),
            "",
        ]
    )


def show(area: str, rows: list[dict], note: str = "") -> None:
    """Print the machine line (and ``note``) and one area's table (``python -m benchmarks.<area>``)."""
    print(describe_machine() + (f" | {note}" if note else ""))
    print(f"matmul peak: {peak_line()}")
    print(format_table([SuiteResult(area, rows)]))


def area_parser(area: str, doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.<area>`: the module's docstring and its --quick flag."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{area}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    add_emulated_bf16_flag(parser)
    return parser


def add_emulated_bf16_flag(parser: argparse.ArgumentParser) -> None:
    """``--emulated-bf16``: time the bf16 rows even without native bf16 (sets `EMULATED_BF16`)."""

    class Flag(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            EMULATED_BF16["time"] = True
            setattr(namespace, self.dest, True)

    parser.add_argument(
        "--emulated-bf16",
        action=Flag,
        nargs=0,
        default=False,
        help="time the bf16 rows on a CPU without native bf16 too (they measure oneDNN's emulation)",
    )
