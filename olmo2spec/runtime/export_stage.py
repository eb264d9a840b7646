"""Export stages: the source run's final checkpoint as a Hugging Face directory.

`$CHECKPOINT_ROOT/<source>/step-N` (final) -> `$CHECKPOINT_ROOT/<stage>/hf` (`export_hf.export_hf`).
"""

from __future__ import annotations

import sys

from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import ExportStagePlan
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.runtime.checkpoint import CheckpointError, final_step

__all__ = ["run_export_stage"]


def run_export_stage(ctx: RunContext) -> int:
    """Export the stage's source run's final checkpoint; print where it went."""
    stage = ctx.stage
    assert isinstance(stage, ExportStagePlan)
    name = stage.name
    if stage.format != "hf":
        print(f"export {name}: format {stage.format!r} is not supported (only 'hf')", file=sys.stderr)
        return ExitCode.USAGE
    try:
        checkpoint = final_step(ctx.checkpoint_root / stage.source)
    except CheckpointError as exc:
        print(f"export {name}: {exc}", file=sys.stderr)
        return ExitCode.CHECKPOINT
    from olmo2spec.runtime.export_hf import ExportError, export_hf  # torch only when there is work

    out = ctx.checkpoint_root / name / "hf"
    try:
        export_hf(checkpoint, ctx.plan, out)
    except ExportError as exc:
        print(f"export {name}: {exc}", file=sys.stderr)
        return ExitCode.CHECKPOINT
    print(f"export {name}: {stage.source} ({checkpoint}) exported to {out}", flush=True)
    print(out, flush=True)
    return ExitCode.OK
