"""A run's steps on disk: how a step directory is named and which ones are complete.

`$CHECKPOINT_ROOT/<run>/step-0000100/` counts once its COMPLETE marker is there (written last, by `seal`);
a directory without one is a save that did not finish. This module reads names only, never a file's bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["COMPLETE", "PLAN", "step_dir", "step_number", "is_complete", "complete_steps", "latest_complete",
           "partial_steps"]

COMPLETE = "COMPLETE"
"""The marker file that makes a step directory count."""

PLAN = "plan.json"
"""The plan a step was trained with, saved in it (`described`)."""

_STEP = re.compile(r"step-(\d+)")


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"step-{step:07d}"


def step_number(path: Path) -> int | None:
    """The step count a step directory's name says; None when it is not named like one."""
    match = _STEP.fullmatch(path.name)
    return int(match[1]) if match else None


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def complete_steps(run_dir: Path) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    if not run_dir.is_dir():
        return []
    return sorted(step for p in run_dir.glob("step-*") if (step := step_number(p)) is not None and is_complete(p))


def latest_complete(run_dir: Path) -> Path | None:
    steps = complete_steps(run_dir)
    return step_dir(run_dir, steps[-1]) if steps else None


def partial_steps(run_dir: Path) -> list[Path]:
    """Step directories without a COMPLETE marker (saves that did not finish), oldest first."""
    return sorted(p for p in run_dir.glob("step-*") if step_number(p) is not None and not is_complete(p))
