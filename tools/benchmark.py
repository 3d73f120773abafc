"""Every side-by-side benchmark in one run: a table of ratios, written to docs/benchmarks.md.

python tools/benchmark.py --quick                      # < 5 minutes on 2 cores
python tools/benchmark.py                              # full sizes
python tools/benchmark.py --cls-checkpoint runs/cls/checkpoints/best.pt data.root=DIR   # + INT8 agreement

Suites: tools/benchmark_{backbone,cls,det,seg,fewshot}.py (whichever exist) and the deployment rows
(INT8 vs fp32 on CPU; fp16 vs fp32 on CUDA). COCO evaluation vs pycocotools is a row of benchmark_det.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tasks.deploy import benchmark as deploy_benchmark  # noqa: E402
from tasks.deploy.suite import format_table, load_run, render_markdown, run_suites  # noqa: E402

SCRIPTS = ("backbone", "cls", "det", "seg", "fewshot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="data.* overrides for --cls-checkpoint's saved config")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--only", nargs="+", choices=(*SCRIPTS, "deploy"), help="run only these suites")
    parser.add_argument("--cls-checkpoint", help="trained classifier: adds INT8 top-1 agreement rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"), help="'' = do not write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    suites = {}
    for name in SCRIPTS:
        run = load_run(ROOT / "tools" / f"benchmark_{name}.py")
        if run is not None and (not args.only or name in args.only):
            suites[name] = run
    if not args.only or "deploy" in args.only:
        suites["deploy"] = functools.partial(
            deploy_benchmark.run, checkpoint=args.cls_checkpoint, overrides=args.overrides
        )
    machine = _machine()
    print(machine)
    results = run_suites(suites, args.quick)
    print(format_table(results))
    if args.output:
        command = "python tools/benchmark.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        Path(args.output).write_text(render_markdown(results, machine, command.strip(), date))
        print(f"wrote {args.output}")
    return 1 if any(r.error for r in results) else 0


def _machine() -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_bench_backbone_machine", ROOT / "tools" / "benchmark_backbone.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.machine_description()


if __name__ == "__main__":
    raise SystemExit(main())
