"""`olmo2spec`: parses arguments, calls the compiler, prints results and errors. No logic here."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from olmo2spec import __version__
from olmo2spec.atomic import write_atomic
from olmo2spec.exitcodes import ExitCode
from olmo2spec.spec.diagnostics import Diagnostic, SpecError, error_summary
from olmo2spec.terminal import printable

if TYPE_CHECKING:
    from pathlib import Path

    from olmo2spec.plan.plan import Plan

__all__ = ["main"]


def _console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 here; main() exits as on every other path
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160  # piped output: wide enough for the tables
    return _Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _print_diagnostics(diagnostics: Sequence[Diagnostic]) -> None:
    for d in diagnostics:
        print(printable(d.render(), newlines=True), file=sys.stderr)
    summary = error_summary(diagnostics)
    if summary:
        print(summary, file=sys.stderr)


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value, e.g. --set stages.pretrain.lr.peak=4e-4 (repeatable)")
    p.add_argument("--strict", action="store_true", help="treat lint warnings as errors")


def cmd_check(args: argparse.Namespace) -> int:
    from olmo2spec.compiler import check

    status = 0
    for spec in args.spec:
        try:
            checked = check(spec, args.overrides, strict=args.strict)
        except SpecError as exc:
            _print_diagnostics(exc.diagnostics)
            status = ExitCode.USAGE
            continue
        _print_diagnostics(checked.warnings)
        plan = checked.plan
        print(f"ok: {printable(spec)}: {printable(plan.recipe.name)}, {plan.model.params.total:,} parameters, "
              f"{len(plan.stages)} stages, "
              f"{len(checked.warnings)} warning{'s' * (len(checked.warnings) != 1)}")
    return status


def cmd_explain(args: argparse.Namespace) -> int:
    from olmo2spec.compiler import check
    from olmo2spec.plan.plan import to_json

    checked = check(args.spec, args.overrides, strict=args.strict)
    if args.json:
        sys.stdout.write(to_json(checked.plan))
        return 0
    _print_diagnostics(checked.warnings)
    from olmo2spec.explain import render_plan

    render_plan(checked.plan, _console())
    return 0


def _printable(text: str) -> str:
    """A path as text for any terminal: control characters and bytes that are not UTF-8 become escapes."""
    return printable(text)


def _error(message: str) -> None:
    print(f"error: {printable(message)}", file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from olmo2spec.compiler import check
    from olmo2spec.emit.bundle import build_bundle

    if args.output == "":  # not the default: an empty name is a mistake (an unset variable)
        print("error: build -o needs the bundle's directory (got ''); leave -o out for generated/<spec>/",
              file=sys.stderr)
        return ExitCode.USAGE
    if args.output == "-":
        print("error: build -o - : a bundle is a directory, not a stream; give a directory (./- for one named -)",
              file=sys.stderr)
        return ExitCode.USAGE
    checked = check(args.spec, args.overrides, strict=args.strict)
    _print_diagnostics(checked.warnings)
    spec = Path(args.spec)
    out = Path(args.output) if args.output is not None else Path("generated") / spec.stem
    built = build_bundle(checked, out, spec.name)
    for rel, kept in built.carried.edited:
        print(f"warning: {_printable(rel)} was edited since the last build: your version is kept as "
              f"{_printable(kept)}", file=sys.stderr)
    for rel, kept in built.carried.kept:
        print(f"warning: {_printable(rel)} is not the build's, and the new build writes there: moved to "
              f"{_printable(kept)}", file=sys.stderr)
    size = sum(len(data) for data in built.files.values())
    print(f"built {_printable(str(out))}/: {len(built.files)} files, {size / 1024:.0f} KiB, "
          f"{checked.plan.recipe.name}, {len(checked.plan.stages)} stages")
    if built.carried.moved:
        moved = built.carried.moved
        print(f"  kept from the old bundle: {', '.join(map(_printable, moved[:6]))}"
              f"{f' and {len(moved) - 6} more' if len(moved) > 6 else ''}")
    print(f"  next: bash {_printable(shlex.quote(f'{out}/launch/submit.sh'))} --dry-run")  # safe to paste
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from olmo2spec.compiler import check
    from olmo2spec.diff import diff_plans, render_diff

    a = check(args.a, [*args.overrides, *args.set_a])
    b = check(args.b, [*args.overrides, *args.set_b])
    rows = diff_plans(a.plan, b.plan)
    if args.json:
        print(json.dumps([list(r) for r in rows], indent=2))
    else:
        render_diff(rows, args.a, args.b, _console())
    return ExitCode.DIFFERENT if rows and args.exit_code else ExitCode.OK


def cmd_schema(args: argparse.Namespace) -> int:
    from olmo2spec.spec.jsonschema import recipe_schema

    text = json.dumps(recipe_schema(composed=args.composed), indent=2, sort_keys=True) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    if not args.output or args.output.endswith(os.sep) or os.path.isdir(args.output):
        print(f"error: schema -o needs a file to write, or - for stdout (got {args.output!r})", file=sys.stderr)
        return ExitCode.USAGE
    write_atomic(args.output, text)  # whole or not at all; through a link; into a FIFO as it is
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from olmo2spec.data.tokenizer import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except TokenizerError as exc:
        _error(str(exc))
        return ExitCode.USAGE
    if args.decode:
        try:
            ids = [int(token) for token in args.text]
            print(printable(tokenizer.decode(ids), newlines=True))  # ids can spell ESC sequences
        except (ValueError, TokenizerError) as exc:
            _error(f"cannot decode: {exc}")
            return ExitCode.USAGE
        return 0
    try:
        ids = tokenizer.encode(" ".join(args.text), allow_special=True)
    except TokenizerError as exc:  # text that is not UTF-8
        _error(f"cannot encode: {exc}")
        return ExitCode.USAGE
    print(" ".join(str(i) for i in ids))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from olmo2spec.data.demo import build_demo_corpus
    from olmo2spec.data.owned_dir import DirectoryError

    try:
        report = build_demo_corpus(Path(args.dir), seed=args.seed)
    except DirectoryError as exc:
        _error(str(exc))
        return ExitCode.USAGE
    print(printable(str(report), newlines=True))
    return 0


def _read_plan(bundle: Path) -> Plan | None:
    """The bundle's plan.json; None, with the error printed, when there is none or it is not a plan."""
    from olmo2spec.runtime.bundle import BundleError, read_plan  # no torch there

    try:
        return read_plan(bundle)
    except BundleError as exc:
        _error(str(exc))
    return None


def cmd_export_hf(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    try:  # by name: the runtime (torch) is neither imported by the compiler path nor type-checked with it
        export = importlib.import_module("olmo2spec.runtime.export_hf")
        checkpoints = importlib.import_module("olmo2spec.runtime.checkpoint")
    except ImportError as exc:
        _error(f"export-hf needs the runtime's packages (torch, safetensors): {exc}")
        return ExitCode.NOT_RUNNABLE
    checkpoint = Path(args.checkpoint)
    try:
        step = checkpoints.resolve_step(checkpoint, final=False)
    except checkpoints.CheckpointError as exc:
        _error(str(exc))
        return ExitCode.CHECKPOINT
    try:  # the plan it was trained with, saved in the step, unless a bundle is named
        plan = None if args.bundle else checkpoints.step_plan(step)
    except checkpoints.CheckpointError as exc:
        _error(f"{exc}: pass the bundle it was trained with: --bundle DIR")
        return ExitCode.CHECKPOINT
    if plan is None:  # a step saved before checkpoints carried their plan: the bundle's
        bundle: Path | None = Path(args.bundle) if args.bundle else export.find_bundle(checkpoint)
        if bundle is None and os.environ.get("OLMO2SPEC_BUNDLE"):  # set in a bundle's stage jobs
            bundle = Path(os.environ["OLMO2SPEC_BUNDLE"])
        if bundle is None:
            print(f"error: {_printable(str(step))} carries no plan.json (saved before checkpoints described "
                  f"themselves) and there is none in the directories above it: pass the bundle the checkpoint was "
                  "trained with: --bundle DIR", file=sys.stderr)
            return ExitCode.USAGE
        plan = _read_plan(bundle)
        if plan is None:
            return ExitCode.USAGE
    try:
        export.hf_config(plan)
    except export.ExportError as exc:  # the recipe's model, not the checkpoint: Olmo2 cannot represent it
        _error(str(exc))
        return ExitCode.USAGE
    try:
        out = export.export_hf(step, plan, Path(args.output), args.dtype)
    except (export.ExportError, checkpoints.CheckpointError) as exc:  # damaged, another model's, not an export
        _error(str(exc))
        return ExitCode.CHECKPOINT
    print(f"exported {_printable(str(step))} as Hugging Face Olmo2ForCausalLM ({args.dtype}) to {_printable(str(out))}")
    return ExitCode.OK


def cmd_demo_report(args: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    try:  # torch: never on the compiler path
        report = importlib.import_module("olmo2spec.runtime.demo_report")
    except ImportError as exc:  # not a bug: an install to do
        _error(f"demo-report needs the runtime's packages (torch): {exc}")
        return ExitCode.NOT_RUNNABLE
    bundle = Path(args.bundle)
    plan = _read_plan(bundle)
    if plan is None:
        return ExitCode.USAGE
    from olmo2spec.data.sources import data_root
    from olmo2spec.runtime.bundle import checkpoint_root

    checkpoints = checkpoint_root(bundle)
    data = data_root(None, plan.data.root)
    if data is None:
        print("error: set DATA_ROOT to the demo corpus (olmo2spec demo-data DIR)", file=sys.stderr)
        return ExitCode.DATA
    evaluate = importlib.import_module("olmo2spec.runtime.evaluate")
    try:
        rows = report.demo_rows(plan, checkpoints, data, args.limit)
    except evaluate.EvalError as exc:  # a damaged checkpoint, a missing eval file: the message says which
        _error(str(exc))
        return ExitCode(exc.exit_code)
    if not rows:
        _error(f"no finished checkpoints under {checkpoints}")
        return ExitCode.CHECKPOINT
    print(printable(report.render_table(rows), newlines=True))  # labels hold the recipe's mix descriptions
    for line in report.verdicts(rows):
        print(line)
    kinds = report.render_kinds(rows)
    if kinds:
        print(f"\n{printable(kinds, newlines=True)}")
    return ExitCode.OK


def _whole_number(minimum: int):  # type: ignore[no-untyped-def]
    """An argparse type: an int of at least `minimum` (argparse names the option in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum} (got {printable(text)!r})")
        return value
    return parse


def _path(text: str) -> str:
    """An argparse type: a path, not empty (an empty one would mean the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path: give a file or directory")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olmo2spec", description="Compile OLMo 2 recipes into launch bundles.")
    parser.add_argument("--version", action="version", version=f"olmo2spec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="check recipes: every error and warning, nothing written")
    p.add_argument("spec", nargs="+", type=_path, help="recipe files")
    _add_spec_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="print the resolved plan as tables (or --json)")
    p.add_argument("spec", type=_path, help="recipe file")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    _add_spec_options(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("build", help="compile a recipe into a launch bundle (default: generated/<spec>/)")
    p.add_argument("spec", help="recipe file")
    p.add_argument("-o", "--output", help="bundle directory (default: generated/<spec file stem>)")
    _add_spec_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("diff", help="what differs between two recipes' plans, as a table")
    p.add_argument("a", type=_path, help="first recipe")
    p.add_argument("b", type=_path, help="second recipe")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the plans differ")
    p.add_argument("--set-a", action="append", default=[], metavar="KEY=VALUE", help="override in A only")
    p.add_argument("--set-b", action="append", default=[], metavar="KEY=VALUE",
                   help="override in B only: diff X X --set-b stages.pretrain.lr.peak=4e-4 shows what it changes")
    _add_spec_options(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("tokenize", help="text to token ids (special tokens allowed), or --decode ids")
    p.add_argument("text", nargs="+", help="text (joined by spaces), or ids with --decode")
    p.add_argument("--decode", action="store_true", help="decode token ids to text")
    p.add_argument("--tokenizer", default="dolma2", help="dolma2 (default) or bytes")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("demo-data", help="build the offline demo corpus (raw JSONL and eval splits) in DIR")
    p.add_argument("dir", type=_path, help="output directory (becomes DATA_ROOT)")
    p.add_argument("--seed", type=_whole_number(0), default=0, help="seed of the synthetic math")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("export-hf", help="export a checkpoint as a Hugging Face Olmo2ForCausalLM directory")
    p.add_argument("checkpoint", metavar="CKPT", type=_path,
                   help="a step directory, or a run directory (its newest complete step)")
    p.add_argument("output", metavar="OUT", type=_path, help="export directory (an earlier export there is replaced)")
    p.add_argument("--bundle", metavar="DIR", type=_path,
                   help="bundle whose plan.json describes the model (default: the plan saved in the step; "
                        "for a step saved without one, the bundle above CKPT)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights' dtype")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("demo-report", help="the demo's table: pretrained, ingredients, soup and post-trained models, "
                       "loss and math, and held-out chat, preference and RLVR numbers")
    p.add_argument("bundle", type=_path, help="the tiny recipe's bundle (checkpoints under $CHECKPOINT_ROOT)")
    p.add_argument("--limit", type=_whole_number(1), default=None,
                   help="evaluate only the first N math items of each split")
    p.set_defaults(func=cmd_demo_report)

    p = sub.add_parser("schema", help="JSON Schema (draft 7) of recipe files as written, for editors")
    p.add_argument("--composed", action="store_true",
                   help="of a recipe after extends/include/--set instead: every required key, every kind")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_schema)
    return parser


def _stand_in_for_closed_streams() -> None:
    """stdin, stdout or stderr closed by the caller (`>&-`): /dev/null in their place, so output is dropped
    quietly and no file opened later takes their descriptors (a child process would write into it)."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDONLY if mode == "r" else os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115 (lives as long as sys)


def _reader_gone() -> int:
    """The reader of stdout left (`| head -1`): drop what is still buffered, quietly (Python's docs, "Note on
    SIGPIPE"), and exit as SIGPIPE would have."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, AttributeError, ValueError):  # not a real file (captured in tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    return ExitCode.READER_GONE


def main(argv: Sequence[str] | None = None) -> int:
    _stand_in_for_closed_streams()
    args = build_parser().parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print "Exception ignored"
        return status
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return _reader_gone()
    except OSError as exc:  # the machine's, not olmo2spec's: a full disk, no permission, an existing file
        _error(str(exc))
        return ExitCode.IO
    except Exception as exc:  # a bug in olmo2spec, not in the recipe
        if os.environ.get("OLMO2SPEC_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {printable(str(exc))}\n"
              f"  this is a bug in olmo2spec {__version__}; rerun with OLMO2SPEC_DEBUG=1 for a traceback and report it",
              file=sys.stderr)
        return ExitCode.INTERNAL


if __name__ == "__main__":
    sys.exit(main())
