"""A step describes itself: the plan it was trained with is saved beside its weights as `plan.json`.

Rank 0 writes it before the weights, so it is one of the step's checksummed files (`CHECKSUMS.json`,
then COMPLETE). Export, eval and soups read the model, tokenizer and names from it, so a step directory
alone is enough to use it. A step saved before steps carried their plan has none: it needs a bundle.
"""

from __future__ import annotations

from pathlib import Path

from olmo2spec.plan.plan import Plan, from_json
from olmo2spec.runtime.checkpoint.integrity import CheckpointError, listed_files, read_marker, verify
from olmo2spec.runtime.checkpoint.steps import PLAN

__all__ = ["PLAN", "write_plan", "step_plan", "plan_of"]

def write_plan(path: Path, plan_json: str) -> None:
    """Write a step's plan (the bundle's plan.json text); `seal` checksums it with the step's other files."""
    (path / PLAN).write_text(plan_json, encoding="utf-8")


def step_plan(path: Path) -> Plan | None:
    """The plan step `path` was trained with, verified; None when it was saved without one.

    Raises:
        CheckpointError: a damaged step marker or plan.json, or a plan this olmo2spec cannot read.
    """
    marker = read_marker(path)
    listed = listed_files(path, marker, warn=False)
    if listed is None or PLAN not in listed:  # saved before steps carried their plan (or before checksums)
        return None
    verify(path, [PLAN], marker=marker)
    try:
        return from_json((path / PLAN).read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as exc:  # PlanVersionError: written by another olmo2spec
        raise CheckpointError(f"checkpoint {path}: its {PLAN} is not a plan this olmo2spec reads ({exc})") from None


def plan_of(path: Path, given: Plan | None = None) -> Plan:
    """`given` when there is one, else the plan step `path` carries.

    Raises:
        CheckpointError: when `given` is None and the step carries no plan (or a damaged one).
    """
    if given is not None:
        return given
    plan = step_plan(path)
    if plan is None:
        raise CheckpointError(f"checkpoint {path} carries no {PLAN} (saved before checkpoints described themselves): "
                              "give the plan of the bundle it was trained with")
    return plan
