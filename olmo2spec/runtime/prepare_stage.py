"""The runner of prepare stages (named in olmo2spec/kinds.py's table).

`main()` imports a runner's module only when it runs a stage of that kind, so that importing the
runtime's entry point stays light (no numpy, no torch) for `preflight`.
"""

from __future__ import annotations

import sys
import time

from olmo2spec.exitcodes import ExitCode
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.terminal import printable

__all__ = ["run_prepare_stage"]


def run_prepare_stage(ctx: RunContext) -> int:
    """Tokenize and filter the stage's raw files into token files; print and save the report.

    `${DATA_ROOT}` is the plan's `[data] root`, or with root = "env" (the default) the DATA_ROOT
    environment variable. The report goes to `<checkpoint_root>/<run>/prepare-report.json`.
    """
    from olmo2spec.atomic import write_json_atomic
    from olmo2spec.data.prepare import PrepareError, prepare
    from olmo2spec.data.sources import DataRootError, check_declared_counts, data_root
    from olmo2spec.data.tokenizer import TokenizerError
    from olmo2spec.plan.plan import PrepareStagePlan
    from olmo2spec.spec.diagnostics import Severity

    stage = ctx.stage
    assert isinstance(stage, PrepareStagePlan)
    root = data_root(plan_root=ctx.plan.data.root)
    if root is None:
        print(f"prepare {stage.name}: DATA_ROOT is not set: export DATA_ROOT=/path/to/data (the directory the "
              f"sources' ${{DATA_ROOT}} stands for), or set [data] root in the recipe", file=sys.stderr)
        return ExitCode.DATA
    start = time.perf_counter()
    try:
        report = prepare(ctx.plan, stage, root)
    except (PrepareError, DataRootError, TokenizerError, OSError) as exc:  # OSError: a full disk, a permission
        print(f"prepare {stage.name}: {printable(str(exc), newlines=True)}", file=sys.stderr)  # paths from DATA_ROOT
        io = isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError)
        return ExitCode.IO if io else ExitCode.DATA
    seconds = time.perf_counter() - start
    print(report.table(), flush=True)
    files = sum(s.files for s in report.sources.values())
    redone = files - sum(s.skipped for s in report.sources.values())
    raw_mb = sum(s.raw_bytes for s in report.sources.values()) / 1e6
    print(f"{files} files ({raw_mb:,.1f} MB raw), {redone} tokenized now, {files - redone} done before; "
          f"{seconds:.1f} s", flush=True)
    path = ctx.run_dir / "prepare-report.json"
    write_json_atomic(path, report.to_dict(), parents=True)
    print(f"report: {path}", flush=True)
    problems = check_declared_counts(ctx.plan, root, names=list(report.sources))
    for problem in problems:
        print(problem.render(), file=sys.stderr)
    if any(p.severity is Severity.ERROR for p in problems):
        print(f"prepare {stage.name}: the token files are written, but their sizes are far from the sources' "
              f"declared `tokens`, which the mixes are computed from: fix the recipe or the data", file=sys.stderr)
        return ExitCode.DATA
    return ExitCode.OK
