"""Which step a consumer uses: a run's newest or final complete step, or a step directory named directly.

Every consumer (eval, soup, export, the export stage, the trainer's start from a predecessor) asks here, so
a missing, unfinished or damaged run gives the same message whoever reads it.
"""

from __future__ import annotations

from pathlib import Path

from olmo2spec.runtime.checkpoint.integrity import CheckpointError, read_marker
from olmo2spec.runtime.checkpoint.steps import COMPLETE, is_complete, latest_complete, partial_steps, step_number

__all__ = ["newest_step", "final_step", "resolve_step"]


def newest_step(run_dir: Path, who: str | None = None) -> Path:
    """The newest complete step of a run directory; `who` is what messages call the run (default: its name).

    Raises:
        CheckpointError: when the run has no complete step.
    """
    path = latest_complete(run_dir)
    if path is None:
        partial = [p.name for p in partial_steps(run_dir)]
        detail = f" ({len(partial)} incomplete: {', '.join(partial[-3:])})" if partial else ""
        raise CheckpointError(f"{who or run_dir.name} has no complete checkpoint in {run_dir}{detail}: "
                              "run its stage first")
    return path


def final_step(run_dir: Path, who: str | None = None) -> Path:
    """The final step of a finished run: its newest complete step, which must be marked final.

    Raises:
        CheckpointError: when the run has no complete step, its newest is not final, or its marker is damaged.
    """
    path = newest_step(run_dir, who)
    marker = read_marker(path)
    if not marker.get("final"):
        raise CheckpointError(f"{who or run_dir.name} has not finished: its newest checkpoint {path} (step "
                              f"{marker['step']}) is not final (rerun its stage to complete it)")
    return path


def resolve_step(path: Path, *, final: bool) -> Path:
    """`path` itself when it is a complete step, else the newest (`final`: the final) step of the run it names.

    Raises:
        CheckpointError: when `path` does not exist, is an incomplete step, or is a run with no such step.
    """
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if is_complete(path):
        return path
    if (path / ".metadata").is_file() or step_number(path) is not None:
        raise CheckpointError(f"checkpoint {path} is incomplete (no {COMPLETE} marker: its save did not finish)")
    return final_step(path) if final else newest_step(path)
