"""`python -m olmo2spec.runtime`: what a bundle's launch scripts and stage entry points call.

`preflight` checks this node; `run` runs one run of one stage from the bundle's plan.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from olmo2spec import __version__
from olmo2spec.exitcodes import ExitCode
from olmo2spec.kinds import stage_kind
from olmo2spec.runtime.bundle import BundleError, load_run
from olmo2spec.runtime.preflight import PreflightError, preflight

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m olmo2spec.runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("preflight", "check this node before a stage"), ("run", "run one run of a stage")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bundle", type=Path, required=True, help="the bundle directory")
        p.add_argument("--stage", required=True, help="stage name")
        # `--run-name` for stage entry points: torchrun would take `--run` for its own `--run-path`
        p.add_argument("--run", "--run-name", dest="run", help="run name (default: the stage's first run)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        ctx = load_run(args.bundle, args.stage, args.run)
    except BundleError as exc:
        print(f"olmo2spec runtime {__version__}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.command == "preflight":
        try:
            for line in preflight(ctx):
                print(line, flush=True)
        except PreflightError as exc:
            print(f"preflight failed on {exc}", file=sys.stderr)
            return ExitCode.PREFLIGHT
        return ExitCode.OK
    kind = stage_kind(ctx.stage.kind)  # the plan was read, so the kind is in the table
    if not kind.runnable:  # the launchers skip these; only a hand-run command gets here
        print(f"olmo2spec runtime {__version__} cannot run {ctx.stage.kind} stages yet "
              f"(stage {ctx.stage.name!r}, run {ctx.run!r})", file=sys.stderr)
        return ExitCode.NOT_RUNNABLE
    return kind.load_runner()(ctx)
