"""The one table of stage kinds: what each `kind` of `[[stages]]` is, for every layer.

The checker, the resolver, the emitter, `explain` and the runtime all read this table; none keeps
a list of kind names of its own. Adding a kind is: its spec class (spec/stages.py), its plan class
(plan/plan.py), one row here, and its runner (a runtime module). A row without a runner is a kind
the compiler plans but the runtime cannot run yet: `check` warns (W301), `explain` and the bundle
mark it "not yet runnable", and the launchers skip it rather than submit a job that would fail.

Nothing here imports the runtime: a runner is named as "module:function" and imported only by
the runtime, when a stage of that kind runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

import attrs

from olmo2spec.plan.plan import (
    EvalStagePlan,
    ExportStagePlan,
    PostTrainStagePlan,
    PrepareStagePlan,
    SoupStagePlan,
    TrainStagePlan,
)
from olmo2spec.spec.stages import (
    AnnealStage,
    DpoStage,
    EvalStage,
    ExportStage,
    MicroannealStage,
    PrepareStage,
    PretrainStage,
    RewardStage,
    RlvrStage,
    SftStage,
    SoupStage,
    StageSpec,
)

__all__ = ["StageKind", "STAGE_KINDS", "stage_kind", "kinds_leaving", "Leaves", "spec_classes"]


Leaves = Literal["data", "checkpoint", "reward-model", "nothing"]


@attrs.frozen(kw_only=True)
class StageKind:
    """One row: a stage kind and the facts about it that more than one layer needs."""

    name: str
    """The `kind` value in a recipe and in plan.json."""
    spec: type[StageSpec]
    """The recipe's class for it (its `kind` field is this name)."""
    plan: type
    """The plan's class for it (several kinds may share one)."""
    starts_from: Literal["data", "checkpoint"]
    """What the stage `from` names must leave: "data" (a data dependency only: no weights are loaded)
    or "checkpoint" (the model this stage starts from)."""
    needs_from: bool
    """Whether `from` is required."""
    leaves: Leaves
    """What its runs leave for later stages: "data" (token files), "checkpoint" (a model, which later
    stages, soups and evals start from), "reward-model" (a scalar model, which only PPO's value function
    starts from: no lm_head), or "nothing" (results for people: scores, an export)."""
    distributed: bool
    """Launched with torchrun on every GPU of its nodes; otherwise one process per job."""
    gpus: bool
    """Asks SLURM for GPUs (on a GPU cluster)."""
    chat_model: bool
    """Its checkpoints are prompted in the chat template (post-trained models), not as base models."""
    base_training: bool
    """Counts towards the paper's base-model totals (pretraining and mid-training tokens and FLOPs)."""
    runner: str | None
    """"module:function" that runs one run of a stage of this kind; None: the runtime cannot run it yet."""

    @property
    def runnable(self) -> bool:
        return self.runner is not None

    def load_runner(self) -> Callable[[Any], int]:
        """The runner function, imported now (runtime modules import torch: only the runtime calls this).

        Raises:
            LookupError: for a kind the runtime cannot run yet.
        """
        if self.runner is None:
            raise LookupError(f"no runner for {self.name} stages")
        module, function = self.runner.split(":")
        runner: Callable[[Any], int] = getattr(importlib.import_module(module), function)
        return runner


_TRAINER = "olmo2spec.runtime.trainer:run_train_stage"

# Every field spelled out in every row: the table is read across, one kind per row.
_ROWS = (
    StageKind(name="prepare", spec=PrepareStage, plan=PrepareStagePlan,
              starts_from="data", needs_from=False, leaves="data", distributed=False, gpus=False,
              chat_model=False, base_training=False, runner="olmo2spec.runtime.prepare_stage:run_prepare_stage"),
    StageKind(name="pretrain", spec=PretrainStage, plan=TrainStagePlan,
              starts_from="data", needs_from=False, leaves="checkpoint", distributed=True, gpus=True,
              chat_model=False, base_training=True, runner=_TRAINER),
    StageKind(name="anneal", spec=AnnealStage, plan=TrainStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="checkpoint", distributed=True, gpus=True,
              chat_model=False, base_training=True, runner=_TRAINER),
    # microanneals compare data sources (section 4.4.2); the paper's totals leave them out
    StageKind(name="microanneal", spec=MicroannealStage, plan=TrainStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="checkpoint", distributed=True, gpus=True,
              chat_model=False, base_training=False, runner=_TRAINER),
    StageKind(name="soup", spec=SoupStage, plan=SoupStagePlan,
              starts_from="checkpoint", needs_from=False, leaves="checkpoint", distributed=False, gpus=False,
              chat_model=False, base_training=False, runner="olmo2spec.runtime.soup:run_soup_stage"),
    StageKind(name="sft", spec=SftStage, plan=PostTrainStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="checkpoint", distributed=True, gpus=True,
              chat_model=True, base_training=False, runner="olmo2spec.runtime.sft:run_sft_stage"),
    StageKind(name="dpo", spec=DpoStage, plan=PostTrainStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="checkpoint", distributed=True, gpus=True,
              chat_model=True, base_training=False, runner="olmo2spec.runtime.dpo:run_dpo_stage"),
    # a scalar model (runtime/scalar_model.py), not a language model: only rlvr's `value_from` reads it
    StageKind(name="reward", spec=RewardStage, plan=PostTrainStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="reward-model", distributed=True, gpus=True,
              chat_model=True, base_training=False, runner="olmo2spec.runtime.reward:run_reward_stage"),
    StageKind(name="rlvr", spec=RlvrStage, plan=PostTrainStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="checkpoint", distributed=True, gpus=True,
              chat_model=True, base_training=False, runner="olmo2spec.runtime.rlvr:run_rlvr_stage"),
    StageKind(name="eval", spec=EvalStage, plan=EvalStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="nothing", distributed=False, gpus=True,
              chat_model=False, base_training=False, runner="olmo2spec.runtime.evaluate:run_eval_stage"),
    StageKind(name="export", spec=ExportStage, plan=ExportStagePlan,
              starts_from="checkpoint", needs_from=True, leaves="nothing", distributed=False, gpus=True,
              chat_model=False, base_training=False, runner="olmo2spec.runtime.export_stage:run_export_stage"),
)

STAGE_KINDS: dict[str, StageKind] = {row.name: row for row in _ROWS}
"""Kind name -> its row, in the order the documentation lists them."""


def stage_kind(name: str) -> StageKind:
    """The row of kind `name` (a kind the checker accepted, or one read from a plan).

    Raises:
        KeyError: for a name that is no stage kind.
    """
    return STAGE_KINDS[name]


def kinds_leaving(what: Leaves) -> tuple[str, ...]:
    """Kinds whose stages leave `what` ("checkpoint": those a soup, an eval or a finetune can start from)."""
    return tuple(name for name, row in STAGE_KINDS.items() if row.leaves == what)


def spec_classes() -> dict[str, type]:
    """Kind name -> the recipe's class, for reading `[[stages]]`."""
    return {name: row.spec for name, row in STAGE_KINDS.items()}
