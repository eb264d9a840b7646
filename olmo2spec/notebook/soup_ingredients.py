"""The runs under a checkpoint root that can go into a soup: finished runs of anneal stages.

A run's kind comes from the plan its newest complete step carries (`plan.json`), else from the bundle's plan:
the stage named in the step's COMPLETE marker, or the stage that has a run of that name. Only final steps
count (what the soup stage uses, `final_step`); an anneal run that has not finished is listed apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from olmo2spec.plan.plan import Plan, TrainStagePlan
from olmo2spec.runtime.checkpoint import CheckpointError, latest_complete, read_marker, step_plan

__all__ = ["Ingredient", "Listing", "find_ingredients", "plan_for", "INGREDIENT_KINDS"]

INGREDIENT_KINDS = ("anneal",)
"""The stage kinds whose runs the paper soups (section 4.5: anneals of the same mix with other seeds)."""


@attrs.frozen(kw_only=True)
class Ingredient:
    run: str
    """The run directory's name under the checkpoint root."""
    path: Path
    """Its final step."""
    step: int
    stage: str
    kind: str


@attrs.frozen(kw_only=True)
class Listing:
    ingredients: list[Ingredient]
    unfinished: list[str]
    """One line per run of an ingredient kind that cannot go in yet (not finished, or unreadable)."""


def plan_for(step: Path, fallback: Plan | None) -> Plan | None:
    """The plan step `step` carries, else `fallback` (the bundle's).

    Raises:
        CheckpointError: a damaged marker or plan.json.
    """
    return step_plan(step) or fallback


def _stage_kind(plan: Plan | None, marker: dict[str, Any], run: str) -> tuple[str, str] | None:
    """(stage, kind) of the run: the stage its marker names, else the one with a run of its name."""
    for stage in plan.stages if plan is not None else []:
        if stage.name == marker.get("stage") or (isinstance(stage, TrainStagePlan)
                                                 and any(r.name == run for r in stage.runs)):
            return stage.name, stage.kind
    return None


def find_ingredients(root: Path, fallback: Plan | None = None,
                     kinds: Sequence[str] = INGREDIENT_KINDS) -> Listing:
    """The finished runs of `kinds` stages under `root`, by name; `fallback`: the plan of steps without one."""
    found: list[Ingredient] = []
    unfinished: list[str] = []
    runs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    for run_dir in runs:
        step = latest_complete(run_dir)
        if step is None:
            continue
        try:
            marker = read_marker(step)
            stage_kind = _stage_kind(plan_for(step, fallback), marker, run_dir.name)
        except CheckpointError as exc:
            unfinished.append(f"{run_dir.name}: {exc}")
            continue
        if stage_kind is None or stage_kind[1] not in kinds:
            continue
        if not marker.get("final"):
            unfinished.append(f"{run_dir.name}: not finished (its newest checkpoint, step {marker['step']:,}, "
                              "is not final)")
            continue
        found.append(Ingredient(run=run_dir.name, path=step, step=int(marker["step"]), stage=stage_kind[0],
                                kind=stage_kind[1]))
    return Listing(ingredients=found, unfinished=unfinished)
