"""The command line shared by every tools/train_*.py: config + overrides + resume/weights/eval flags."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import torch.distributed as dist

from backbones.errors import UserError

from .config import load_config
from .trainer import NonFiniteLossError, Trainer

log = logging.getLogger("tasks.engine")

# Only errors in what the user gave become one-line messages (exit 2); anything else is a bug in this
# code or a library and keeps its traceback.
USER_ERRORS = (UserError,)


class UsageError(UserError):
    """Command-line flags that cannot work together (argparse checks each flag alone)."""


def exits_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a tool's ``main``: bad input (a UserError) prints ``error: ...`` and returns exit code 2.

    Every other exception propagates with its traceback: it is a bug, not the user's mistake.
    """

    @wraps(main)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)  # print, not log: shown even when logging is reconfigured
            return 2

    return run


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """The flags every training tool accepts (see README.md)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="YAML config file (may use _base_)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=0.01 data.root=DIR")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH|auto",
        help="resume model/optimizer/scheduler/scaler/EMA/epoch/RNG; bare flag = auto "
        "(output_dir/checkpoints/last.pt if it exists)",
    )
    parser.add_argument("--weights", default=None, metavar="PATH", help="initialise the model only")
    parser.add_argument(
        "--partial-load",
        action="store_true",
        help="with --weights: load the tensors that fit and ignore the rest (default: refuse a checkpoint "
        "with tensors this model lacks or lacking tensors it has)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that the output folder holds (default: refuse; --resume continues it)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate and exit (no training)")
    parser.add_argument("--output-dir", default=None, help="run folder (overrides output_dir)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides device)")
    return parser


def parse_args(argv: list[str] | None = None, description: str = "") -> argparse.Namespace:
    """Parse flags and overrides in any order (`CONFIG --resume key=value` works too)."""
    args = build_parser(description).parse_intermixed_args(argv)
    if args.resume is not None and "=" in args.resume:
        # A bare --resume swallowed the following key=value override: give it back.
        args.overrides.append(args.resume)
        args.resume = "auto"
    return args


def _setup_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {prefix}%(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    if rank not in (None, "0"):
        logging.getLogger("tasks").setLevel(logging.WARNING)  # rank 0 speaks for the job


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides of the command line, with --output-dir and --device as two more."""
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.device:
        overrides.append(f"device={args.device}")
    return overrides


@exits_on_user_error
def run_training_tool(
    task_cls: type, config_cls: type, argv: list[str] | None = None, description: str = ""
) -> int:
    """Parse the shared flags, build the task and run training or evaluation.

    Args:
        task_cls: the Task subclass.
        config_cls: its RunConfig subclass.
        argv: command-line arguments (None: sys.argv[1:]).
        description: help text for --help.

    Returns:
        Process exit code: 0 on success, 2 for bad config/data/checkpoints, 3 for a non-finite loss.
    """
    args = parse_args(argv, description)
    _setup_logging()
    overrides = flag_overrides(args)
    try:
        cfg = load_config(args.config, overrides, config_cls)
        task = task_cls(cfg)
        trainer = Trainer(
            cfg,
            task,
            resume=args.resume,
            weights=args.weights,
            overwrite=args.overwrite,
            partial_load=args.partial_load,
        )
        result: Any = trainer.evaluate() if args.eval_only else trainer.fit()
    except NonFiniteLossError as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 3
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result, indent=2, default=str))
    return 0
