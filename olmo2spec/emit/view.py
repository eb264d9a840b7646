"""What the templates see: the plan, plus the names and lists the bundle's files need.

Templates only substitute, loop and branch on booleans (Jinja's advice: keep logic out of
templates); every file name, job name, dependency list and DAG line is settled here.
Identifiers in scripts come from stage numbers, never from names, so no name can collide
or break a variable.
"""

from __future__ import annotations

import os

import attrs

from olmo2spec.kinds import stage_kind
from olmo2spec.plan.plan import (
    EvalStagePlan,
    ExportStagePlan,
    Plan,
    PostTrainStagePlan,
    PrepareStagePlan,
    SoupStagePlan,
    StagePlan,
    TrainStagePlan,
)
from olmo2spec.spec.quantity import format_tokens

__all__ = ["Job", "BundleView", "build_view"]


@attrs.frozen(kw_only=True)
class Job:
    number: str
    """Two digits, the stage's place in dependency order: file names and script identifiers use it."""
    name: str
    kind: str
    job_name: str
    entry: str
    """The stage's Python entry point, relative to the bundle."""
    sbatch: str
    runs: list[str]
    """Runs of the stage; more than one becomes a SLURM job array."""
    array: bool
    last_index: int
    nodes: int
    nproc: int
    """Processes per node: GPUs, or CPU processes on a CPU cluster."""
    distributed: bool
    gpus: bool
    """Ask SLURM for GPUs."""
    depends: list[str]
    """Numbers of the jobs this one waits for (afterok)."""
    depends_names: list[str]
    summary: str
    """One line for READMEs: what the stage does."""
    cells: list[str]
    """The stage's row in the bundle README's table: steps, tokens, layout, GiB per GPU, GPU-hours."""
    runnable: bool
    """Whether this olmo2spec's runtime can run its kind. A stage that is not gets no entry point and no
    sbatch file: the launchers refuse it by name and skip it in a full run."""
    refusal: str
    """What the launchers say when a stage that is not runnable is named ("" for the others)."""
    skip_note: str
    """The line `local.sh all` and a full `submit.sh` print when they leave the stage out: it is not runnable,
    or it starts from a stage that is left out (its input would never exist); "" when they run it."""


@attrs.frozen(kw_only=True)
class BundleView:
    plan: Plan
    spec_name: str
    version: str
    jobs: list[Job]
    env: list[tuple[str, str]]
    dag: list[str]
    """The stage DAG as text lines."""
    default_nproc: int
    gpu_cluster: bool
    olmes_jobs: list[tuple[Job, EvalStagePlan]]
    """Eval stages that run OLMES suites (all but the toy recipe's `demo` suite)."""
    runtime_eval_jobs: list[Job]
    """Eval stages the runtime runs itself (the `demo` suite)."""
    not_runnable: list[Job]
    """Stages of kinds this olmo2spec's runtime cannot run yet."""
    skipped: list[Job]
    """Stages a full run leaves out: the not runnable ones and every stage after one."""


def _summary(stage: StagePlan) -> str:
    if isinstance(stage, TrainStagePlan):
        runs = f"{len(stage.runs)} runs x " if len(stage.runs) > 1 else ""
        return f"{runs}{stage.steps:,} steps, {format_tokens(stage.tokens)} tokens, lr {stage.lr.kind}"
    if isinstance(stage, PostTrainStagePlan):
        return f"{stage.steps:,} steps over {stage.examples:,} examples of {stage.dataset}"
    if isinstance(stage, SoupStagePlan):
        return f"average of {len(stage.ingredients)} runs"
    if isinstance(stage, EvalStagePlan):
        return f"{stage.suite} suite on {', '.join(stage.targets)}"
    if isinstance(stage, ExportStagePlan):
        return f"{stage.format} export of {stage.source}"
    if isinstance(stage, PrepareStagePlan):
        return f"tokenize {len(stage.sources)} sources"
    return stage.kind


def _cells(stage: StagePlan) -> list[str]:
    if not isinstance(stage, (TrainStagePlan, PostTrainStagePlan)):
        return ["", "", _summary(stage), "", ""]
    par = stage.parallel
    tokens = format_tokens(stage.tokens) if isinstance(stage, TrainStagePlan) else f"{stage.examples:,} examples"
    layout = (f"{par.nodes} x {par.gpus // par.nodes}, shard {par.shard_gpus} x {par.replicate}, "
              f"micro-batch {par.micro_batch} x {par.grad_accum}{', AC' if par.activation_checkpointing else ''}"
              f"{', one FSDP unit' if par.fsdp_units == 'model' else ''}")
    hours = stage.cost.gpu_hours
    return [f"{stage.steps:,}", tokens, layout, f"{stage.memory.total_gib:.1f}",
            f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"]


def _skip_note(stage: StagePlan, why: str, skipped: set[str]) -> str:
    if why:
        return f"skipping {stage.name}: not yet runnable ({why})"
    blocked = [name for name in stage.depends_on if name in skipped]
    return f"skipping {stage.name}: it starts from {blocked[0]}, which is skipped" if blocked else ""


def _refusal(stage: StagePlan, why: str) -> str:
    return (f"stage {stage.name} is not yet runnable: {why}; train it with another tool, put its final checkpoint "
            f"in $CHECKPOINT_ROOT/{stage.name}, then launch the stages after it by name") if why else ""


def _job(plan: Plan, stage: StagePlan, number: str, numbers: dict[str, str], version: str,
         skipped: set[str]) -> Job:
    runs = [r.name for r in stage.runs] if isinstance(stage, TrainStagePlan) else [stage.name]
    kind = stage_kind(stage.kind)
    distributed = kind.distributed  # torchrun on every GPU; the others run as one process per job
    par = getattr(stage, "parallel", None)
    nodes = par.nodes if par is not None else stage.nodes  # type: ignore[union-attr]
    gpu_cluster = plan.cluster.gpu != "cpu"
    why = "" if kind.runnable else f"olmo2spec runtime {version} cannot run {stage.kind} stages yet"
    skip_note = _skip_note(stage, why, skipped)
    if skip_note:
        skipped.add(stage.name)
    return Job(
        number=number, name=stage.name, kind=stage.kind, job_name=f"{plan.recipe.name}-{stage.name}",
        entry=f"stages/{number}-{stage.name}.py", sbatch=f"launch/slurm/{number}-{stage.name}.sbatch", runs=runs,
        array=len(runs) > 1, last_index=len(runs) - 1, nodes=nodes,
        nproc=plan.cluster.gpus_per_node if distributed else 1, distributed=distributed,
        gpus=gpu_cluster and kind.gpus,
        depends=[numbers[d] for d in stage.depends_on], depends_names=list(stage.depends_on),
        summary=_summary(stage), cells=_cells(stage), runnable=kind.runnable,
        refusal=_refusal(stage, why), skip_note=skip_note)


def _dag(jobs: list[Job]) -> list[str]:
    width = max(len(j.name) for j in jobs)
    lines = []
    for j in jobs:
        after = f"<- {', '.join(j.depends_names)}" if j.depends_names else "(start)"
        runs = f" [{len(j.runs)} runs]" if j.array else ""
        mark = "" if j.runnable else " (not yet runnable)"
        lines.append(f"{j.number} {j.name:<{width}}  {j.kind:<11} {after}{runs}{mark}")
    return lines


def _printable_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (Python holds them as surrogates) become `\\xNN`."""
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def build_view(plan: Plan, spec_name: str, version: str) -> BundleView:
    numbers = {stage.name: f"{i:02d}" for i, stage in enumerate(plan.stages, start=1)}
    skipped: set[str] = set()  # filled in dependency order, so a stage sees its predecessors'
    jobs = [_job(plan, stage, numbers[stage.name], numbers, version, skipped) for stage in plan.stages]
    olmes = [(job, stage) for job, stage in zip(jobs, plan.stages, strict=True)
             if isinstance(stage, EvalStagePlan) and stage.suite != "demo"]
    olmes_names = {job.name for job, _ in olmes}
    return BundleView(plan=plan, spec_name=_printable_name(spec_name), version=version, jobs=jobs,
                      env=sorted(plan.cluster.env.items()), dag=_dag(jobs),
                      default_nproc=plan.cluster.gpus_per_node, gpu_cluster=plan.cluster.gpu != "cpu",
                      olmes_jobs=olmes,
                      runtime_eval_jobs=[j for j in jobs if j.kind == "eval" and j.name not in olmes_names],
                      not_runnable=[j for j in jobs if not j.runnable], skipped=[j for j in jobs if j.skip_note])
