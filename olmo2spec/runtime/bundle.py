"""Reading a bundle at run time: its plan, a stage, a run, and where checkpoints go."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from olmo2spec.plan.plan import Plan, StagePlan, TrainStagePlan, from_json

__all__ = ["RunContext", "load_run", "BundleError"]


class BundleError(Exception):
    """The bundle, stage or run asked for does not exist or does not match this olmo2spec."""


@attrs.frozen
class RunContext:
    bundle: Path
    plan: Plan
    stage: StagePlan
    run: str
    checkpoint_root: Path

    @property
    def run_dir(self) -> Path:
        """Where this run's checkpoints live: $CHECKPOINT_ROOT/<run>."""
        return self.checkpoint_root / self.run


def _runs(stage: StagePlan) -> list[str]:
    return [r.name for r in stage.runs] if isinstance(stage, TrainStagePlan) else [stage.name]


def load_run(bundle: Path, stage_name: str, run: str | None) -> RunContext:
    """The plan of `bundle`, its stage `stage_name` and one of that stage's runs.

    Raises:
        BundleError: when plan.json is missing or of another version, or the stage or run is unknown.
    """
    plan_file = bundle / "plan.json"
    try:
        plan = from_json(plan_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{plan_file} not found: is {bundle} a bundle built by `olmo2spec build`?") from None
    except ValueError as exc:  # PlanVersionError, or JSON that is not a plan
        raise BundleError(f"{plan_file}: {exc}") from None
    try:
        stage = plan.stage(stage_name)
    except KeyError:
        names = ", ".join(s.name for s in plan.stages)
        raise BundleError(f"no stage {stage_name!r} in {plan_file} (stages: {names})") from None
    runs = _runs(stage)
    if run is not None and run not in runs:
        raise BundleError(f"stage {stage_name!r} has no run {run!r} (runs: {', '.join(runs)})")
    root = Path(os.environ.get("CHECKPOINT_ROOT") or bundle / "checkpoints")
    return RunContext(bundle=bundle, plan=plan, stage=stage, run=run or runs[0], checkpoint_root=root)
