"""Reading a bundle at run time: its plan, a stage, a run, where checkpoints go, which device to use."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from olmo2spec.plan.plan import Plan, PlanVersionError, StagePlan, TrainStagePlan, from_json

__all__ = ["RunContext", "load_run", "read_plan", "checkpoint_root", "wanted_device", "BundleError"]


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


def read_plan(bundle: Path) -> Plan:
    """The plan of `bundle` (its plan.json).

    Raises:
        BundleError: when plan.json is missing, of another version, or not a plan.
    """
    plan_file = bundle / "plan.json"
    try:
        return from_json(plan_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{plan_file} not found: is {bundle} a bundle built by `olmo2spec build`?") from None
    except PlanVersionError as exc:  # says which versions and to rebuild
        raise BundleError(f"{plan_file}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:  # bad JSON, JSON that is not a plan
        raise BundleError(f"{plan_file}: not a plan written by `olmo2spec build`: {exc}") from None


def checkpoint_root(bundle: Path) -> Path:
    """Where the runs' checkpoints go: $CHECKPOINT_ROOT, else the bundle's checkpoints/."""
    return Path(os.environ.get("CHECKPOINT_ROOT") or bundle / "checkpoints")


def wanted_device(plan: Plan) -> str:
    """"cuda" or "cpu": $OLMO2SPEC_DEVICE (the launchers set it), else the plan's cluster's."""
    return os.environ.get("OLMO2SPEC_DEVICE", "cuda" if plan.cluster.gpu != "cpu" else "cpu")


def _runs(stage: StagePlan) -> list[str]:
    return [r.name for r in stage.runs] if isinstance(stage, TrainStagePlan) else [stage.name]


def load_run(bundle: Path, stage_name: str, run: str | None) -> RunContext:
    """The plan of `bundle`, its stage `stage_name` and one of that stage's runs.

    Raises:
        BundleError: when plan.json is missing or of another version, or the stage or run is unknown.
    """
    plan = read_plan(bundle)
    plan_file = bundle / "plan.json"
    try:
        stage = plan.stage(stage_name)
    except KeyError:
        names = ", ".join(s.name for s in plan.stages)
        raise BundleError(f"no stage {stage_name!r} in {plan_file} (stages: {names})") from None
    runs = _runs(stage)
    if run is not None and run not in runs:
        raise BundleError(f"stage {stage_name!r} has no run {run!r} (runs: {', '.join(runs)})")
    return RunContext(bundle=bundle, plan=plan, stage=stage, run=run or runs[0],
                      checkpoint_root=checkpoint_root(bundle))
