"""The Plan: the contract between compiler and runtime, every value resolved and explicit.

Frozen attrs throughout; nothing downstream changes it. `plan.json` is `to_json(plan)`; the
runtime reads it back with `from_json` and refuses another `PLAN_VERSION`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn

from olmo2spec import __version__
from olmo2spec.plan.counts import ParamCounts
from olmo2spec.plan.memory import MemoryEstimate
from olmo2spec.plan.mixes import MixPlan
from olmo2spec.plan.schedule import LrSchedule
from olmo2spec.spec.cluster import ClusterSpec
from olmo2spec.spec.mixes import SourceSpec
from olmo2spec.spec.model import ModelSpec, TokenizerSpec
from olmo2spec.spec.recipe import RecipeInfo
from olmo2spec.spec.training import CheckpointSpec, DataSpec, OptimizerSpec, RuntimeSpec

__all__ = [
    "PLAN_VERSION", "Plan", "ModelPlan", "ClusterPlan", "ParallelPlan", "Cost", "RunPlan", "PrepareStagePlan",
    "TrainStagePlan", "SoupStagePlan", "PostTrainStagePlan", "EvalStagePlan", "ExportStagePlan", "StagePlan",
    "Estimates", "Departure", "to_json", "from_json", "to_dict", "PlanVersionError",
]

PLAN_VERSION = 1
"""Bumped whenever the Plan's shape changes; the runtime refuses other versions."""

Hyper = int | float | str | bool | list[str] | None


@attrs.frozen(kw_only=True)
class ModelPlan(ModelSpec):
    head_dim: int
    """d_model / n_heads (OLMo 2: 128 at every size)."""
    kv_dim: int
    """n_kv_heads x head_dim: width of the k and v projections."""
    params: ParamCounts
    flops_per_token: int
    """Training FLOPs per token at max_seq_len, MFU convention (6 x non-embedding + attention)."""


@attrs.frozen(kw_only=True)
class ClusterPlan(ClusterSpec):
    gpu_memory_gib: float
    """Memory per accelerator the estimates fit into."""
    gpu_peak_tflops: float
    """Dense BF16 peak per accelerator, the MFU denominator."""
    total_gpus: int
    """nodes x gpus_per_node."""
    env: dict[str, str] = attrs.field(factory=dict)
    """Complete here: the plan's defaults overlaid with the recipe's. The defaults are the bundle's own
    (PYTHONUNBUFFERED, say), so the allow-list of `[cluster.env]` checks the recipe, not this."""


@attrs.frozen(kw_only=True)
class ParallelPlan:
    nodes: int
    gpus: int
    """World size: every GPU is a data-parallel rank (FSDP2/HSDP, no tensor parallelism)."""
    shard_gpus: int
    """GPUs one FSDP shard group spans."""
    replicate: int
    """HSDP replicas: gpus / shard_gpus (1 means plain FSDP)."""
    micro_batch: int
    """Sequences per GPU per forward/backward."""
    grad_accum: int
    """Micro-batches per optimizer step: batch / (gpus x micro_batch)."""
    activation_checkpointing: bool
    fsdp_units: str
    """'block' (one FSDP unit per transformer block) or 'model' (the whole model one unit)."""
    compile: bool
    mixed_precision: str
    """'bf16' (params bf16, reduce fp32) on GPUs; 'fp32' on CPU."""
    backend: str
    """'nccl' on GPUs, 'gloo' on CPU."""


@attrs.frozen(kw_only=True)
class Cost:
    tokens: int
    """Tokens processed by every run of the stage together."""
    flops: float
    """MFU convention (attention included)."""
    flops_6n: float
    """6 x all parameters x tokens (Kaplan; the paper's Table 6)."""
    gpu_hours: float
    """flops / (peak x mfu)."""
    wall_hours: float
    """gpu_hours / GPUs, runs one after another."""
    gpu_energy_kwh: float
    """GPU-hours x power per GPU: Table 19's "Total GPU Power"."""
    energy_kwh: float
    """gpu_energy_kwh x PUE: what the data centre draws (section 6.5)."""
    co2_kg: float
    water_l: float


@attrs.frozen(kw_only=True)
class RunPlan:
    name: str
    """Job and checkpoint-directory name of this run."""
    seed: int
    """Data-order seed."""
    mix: str
    """Mix name under `Plan.mixes`."""


@attrs.frozen(kw_only=True)
class _StageCommon:
    name: str
    kind: str
    description: str
    depends_on: list[str]
    """Stages that must finish first (the DAG's edges)."""


@attrs.frozen(kw_only=True)
class PrepareStagePlan(_StageCommon):
    nodes: int
    """Nodes the job asks for."""
    sources: list[str]
    text_field: str
    filters: list[str]


@attrs.frozen(kw_only=True)
class TrainStagePlan(_StageCommon):
    init_from: str
    """Run whose final checkpoint this stage loads; "" for a random init."""
    restore_optimizer: bool
    runs: list[RunPlan]
    batch_size: int
    """Sequences per optimizer step."""
    seq_len: int
    tokens_per_step: int
    steps: int
    """Optimizer steps per run."""
    tokens: int
    """Tokens per run: steps x tokens_per_step."""
    mix_epochs: float
    """Tokens per run / the mix's budget; over 1 only with repeat_mix."""
    lr: LrSchedule
    optimizer: OptimizerSpec
    """The recipe's [optimizer] with the stage's `optimizer` keys over it: what this stage trains with."""
    ngram_masking: bool
    """Whether instances holding a repeated n-gram run have their labels masked (the stage's own setting, else
    [data].ngram_masking)."""
    parallel: ParallelPlan
    memory: MemoryEstimate
    cost: Cost


@attrs.frozen(kw_only=True)
class SoupStagePlan(_StageCommon):
    nodes: int
    """Nodes the job asks for."""
    ingredients: list[str]
    """Runs whose final checkpoints are averaged."""
    weights: list[float]
    """One per ingredient, summing to 1."""


@attrs.frozen(kw_only=True)
class PostTrainStagePlan(_StageCommon):
    init_from: str
    dataset: str
    examples: int
    epochs: int
    batch_size: int
    max_seq_len: int
    steps: int
    seed: int
    lr: LrSchedule
    optimizer: OptimizerSpec
    """The recipe's [optimizer] with the stage's `optimizer` keys over it: what this stage trains with."""
    hyperparameters: dict[str, Hyper]
    """The kind's own settings (DPO beta, PPO clipping, rlvr's `value_from`: the reward stage PPO's value function
    starts from, None for GRPO, ...), every one explicit."""
    parallel: ParallelPlan
    memory: MemoryEstimate
    cost: Cost


@attrs.frozen(kw_only=True)
class EvalStagePlan(_StageCommon):
    nodes: int
    """Nodes the job asks for."""
    targets: list[str]
    """Runs to evaluate."""
    suite: str
    dev_tasks: list[str]
    """Tasks that may guide decisions (the paper's development suite)."""
    heldout_tasks: list[str]
    """Tasks reported only at the end (the paper's held-out suite)."""


@attrs.frozen(kw_only=True)
class ExportStagePlan(_StageCommon):
    nodes: int
    """Nodes the job asks for."""
    source: str
    """Run to export."""
    format: str


# Each kind's class is named in olmo2spec/kinds.py's table (a test holds the two to each other).
StagePlan = (PrepareStagePlan | TrainStagePlan | SoupStagePlan | PostTrainStagePlan | EvalStagePlan
             | ExportStagePlan)


@attrs.frozen(kw_only=True)
class Estimates:
    base_tokens: int
    """Tokens of pretraining and mid-training, every run counted (the paper's totals)."""
    base_flops_6n: float
    """6 x all parameters x base_tokens: the paper's Table 6 convention."""
    base_flops: float
    """Base FLOPs with attention, MFU convention."""
    total_flops: float
    """Every stage, post-training included (post-training at full sequence length: an upper bound)."""
    gpu_hours: float
    gpu_energy_mwh: float
    """Before PUE, comparable with Table 19's "Total GPU Power"."""
    energy_mwh: float
    """After PUE."""
    co2_tonnes: float
    water_kl: float


@attrs.frozen(kw_only=True)
class Departure:
    """A `[[departures]]` entry with the value the recipe gives its field, as `explain` prints it."""

    field: str
    paper: str
    recipe: str
    """The field's value in the recipe (a stage's optimizer key it leaves unset: the stage's resolved value)."""
    source: str
    note: str = ""


@attrs.frozen(kw_only=True)
class Plan:
    version: int
    olmo2spec_version: str
    recipe: RecipeInfo
    model: ModelPlan
    tokenizer: TokenizerSpec
    optimizer: OptimizerSpec
    data: DataSpec
    checkpoint: CheckpointSpec
    runtime: RuntimeSpec
    cluster: ClusterPlan
    sources: dict[str, SourceSpec]
    mixes: dict[str, MixPlan]
    stages: list[StagePlan]
    estimates: Estimates
    departures: list[Departure] = attrs.field(factory=list)
    """Added after PLAN_VERSION 1: left out of plan.json while empty, read back as empty when absent."""

    def stage(self, name: str) -> StagePlan:
        """The stage called `name`.

        Raises:
            KeyError: when there is none.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


class PlanVersionError(ValueError):
    """plan.json was written by an incompatible olmo2spec."""


def _structure_stage(d: dict[str, Any], _t: object) -> StagePlan:
    from olmo2spec.kinds import stage_kind  # the table names this module's classes: imported when plans are read

    plan: StagePlan = _converter.structure(d, stage_kind(d["kind"]).plan)
    return plan


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(StagePlan, _structure_stage)
_converter.register_structure_hook(Hyper, lambda v, _t: v)
_runtime_fields = make_dict_unstructure_fn(RuntimeSpec, _converter)


def _unstructure_runtime(runtime: RuntimeSpec) -> dict[str, Any]:
    """The metrics sinks (added after PLAN_VERSION 1) are left out while none is on: a bundle that sends
    metrics nowhere else is byte-identical to one built before they existed, and reads back the defaults."""
    fields = _runtime_fields(runtime)
    if not runtime.metrics_sinks and runtime.wandb_project == RuntimeSpec().wandb_project:
        del fields["metrics_sinks"], fields["wandb_project"]
    return fields


_converter.register_unstructure_hook(RuntimeSpec, _unstructure_runtime)
_plan_fields = make_dict_unstructure_fn(Plan, _converter)


def _unstructure_plan(plan: Plan) -> dict[str, Any]:
    """A plan without departures is byte-identical to one built before they existed."""
    fields = _plan_fields(plan)
    if not plan.departures:
        del fields["departures"]
    return fields


_converter.register_unstructure_hook(Plan, _unstructure_plan)


def to_dict(plan: Plan) -> dict[str, Any]:
    return _converter.unstructure(plan)  # type: ignore[no-any-return]


def to_json(plan: Plan) -> str:
    """Deterministic JSON: sorted keys, fixed float repr, trailing newline.

    Raises:
        ValueError: when a float in the plan is NaN or infinite (the resolver refuses such plans).
    """
    # allow_nan=False: NaN and Infinity are not JSON; a plan holding them is a bug, never a file
    return json.dumps(to_dict(plan), indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


def _stage_optimizers_of_older_plans(data: dict[str, Any]) -> None:
    """Plans written before stages had their own `optimizer` trained every stage with the recipe's: give each
    training stage that one, so that an older bundle still runs, as it did."""
    from olmo2spec.kinds import STAGE_KINDS  # the table names this module's classes: imported when plans are read

    training = {name for name, row in STAGE_KINDS.items() if "optimizer" in attrs.fields_dict(row.plan)}
    stages, optimizer = data.get("stages"), data.get("optimizer")
    if not isinstance(stages, list) or not isinstance(optimizer, dict):
        return  # not a plan: structuring says so
    for stage in stages:
        if isinstance(stage, dict) and stage.get("kind") in training and "optimizer" not in stage:
            stage["optimizer"] = optimizer


def _stage_masking_of_older_plans(data: dict[str, Any]) -> None:
    """Plans written before training stages had their own `ngram_masking` masked as [data] said: give each
    training stage that value, so that an older bundle still trains as it did."""
    from olmo2spec.kinds import STAGE_KINDS  # the table names this module's classes: imported when plans are read

    masking = {name for name, row in STAGE_KINDS.items() if "ngram_masking" in attrs.fields_dict(row.plan)}
    stages, settings = data.get("stages"), data.get("data")
    if not isinstance(stages, list) or not isinstance(settings, dict) or "ngram_masking" not in settings:
        return  # not a plan: structuring says so
    for stage in stages:
        if isinstance(stage, dict) and stage.get("kind") in masking and "ngram_masking" not in stage:
            stage["ngram_masking"] = settings["ngram_masking"]


def from_json(text: str) -> Plan:
    """Read plan.json.

    Raises:
        PlanVersionError: when the plan was written for another plan version.
        ValueError: when the text is not JSON of a plan (a hand-edited or truncated file).
    """
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"not a plan: a JSON {type(data).__name__}, not an object")
    if data.get("version") != PLAN_VERSION:
        raise PlanVersionError(
            f"plan version {data.get('version')!r} (olmo2spec {data.get('olmo2spec_version')}) is not "
            f"{PLAN_VERSION} (olmo2spec {__version__}); rebuild the bundle with this olmo2spec, or install the "
            f"version that built it")
    _stage_optimizers_of_older_plans(data)
    _stage_masking_of_older_plans(data)
    try:
        return _converter.structure(data, Plan)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a valid plan: {'; '.join(cattrs.transform_error(exc))}") from None
