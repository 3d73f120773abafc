"""Benchmark classification training: our engine's default CPU path vs a plain fp32 PyTorch loop.

python tools/benchmark_cls.py            # ResNet-50, batch 16, 224x224 (about 2-4 minutes on 2 cores)
python tools/benchmark_cls.py --quick    # fewer steps, no bf16 row
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


from tasks.classification.benchmark import run  # noqa: E402
from tools.benchmark_backbone import machine_description  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    args = parser.parse_args(argv)
    print(machine_description())
    rows = run(quick=args.quick)
    print(f"| {'benchmark':<92} | {'ours':>8} | {'anchor':>8} | unit | ratio | target |")
    print(f"|{'-' * 94}|{'-' * 10}|{'-' * 10}|------|-------|--------|")
    for r in rows:
        target = "-" if r["target"] is None else f">= {r['target']}"
        print(
            f"| {r['name']:<92} | {r['ours']:>8} | {r['anchor']:>8} | {r['unit']} | {r['ratio']} | {target} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
