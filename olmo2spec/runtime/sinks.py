"""Metrics sinks: the records rank 0 writes to metrics.jsonl, also sent to TensorBoard or W&B.

Off unless a recipe's `[runtime] metrics_sinks` names them. As OLMo-core's and torchtitan's
loggers do: imported only when asked for, opened on rank 0 only, and configured from the
environment (WANDB_API_KEY, WANDB_ENTITY, WANDB_MODE=offline ...), never from the recipe.
A resumed run continues its own TensorBoard curves (events past the checkpoint are purged) and
its own W&B run (the id is kept in the run directory).
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any, Protocol

import cattrs

from olmo2spec.plan.plan import Plan, PostTrainStagePlan, TrainStagePlan

__all__ = ["MetricsSink", "TensorBoardSink", "WandbSink", "open_sinks", "require_sinks", "SinkError", "TAGS"]

TAGS = {
    "loss": "train/loss", "z_loss": "train/z_loss", "grad_norm": "train/grad_norm", "lr": "train/lr",
    "masked_share": "train/masked_share", "tokens": "throughput/tokens", "tokens_per_s": "throughput/tokens_per_s",
    "mfu": "throughput/mfu", "loss_spike_score": "spikes/loss_spike_score",
    "grad_spike_score": "spikes/grad_spike_score",
}
"""metrics.jsonl key -> the tag both sinks log it under (the x axis is the record's `step`)."""

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class SinkError(Exception):
    """A sink the recipe asks for cannot be opened; the message says what to install or set."""


class MetricsSink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Event files in <run dir>/tensorboard, through torch's SummaryWriter."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events a killed run wrote past the checkpoint it resumes from (the record
        # of step N is the one written after N steps, so the first to replace is resume_step + 1)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step else None)

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            for key, tag in TAGS.items():
                self.writer.add_scalar(tag, record[key], global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per olmo2spec run, named <recipe>-<run>, grouped by recipe, resumed by its kept id."""

    def __init__(self, run_dir: Path, plan: Plan, stage: TrainStagePlan | PostTrainStagePlan, run: str) -> None:
        import wandb

        id_file = run_dir / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        config = {"recipe": plan.recipe.name, "stage": stage.name, "run": run, "steps": stage.steps,
                  "batch_size": stage.batch_size,
                  "seq_len": stage.seq_len if isinstance(stage, TrainStagePlan) else stage.max_seq_len,
                  "model": cattrs.unstructure(plan.model), "optimizer": cattrs.unstructure(plan.optimizer),
                  "lr": cattrs.unstructure(stage.lr)}
        self.run = wandb.init(project=plan.runtime.wandb_project, name=f"{plan.recipe.name}-{run}",
                              group=plan.recipe.name, id=run_id, resume="allow", dir=str(run_dir), config=config)
        id_file.write_text(run_id + "\n")

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.run.log({tag: record[key] for key, tag in TAGS.items()}, step=record["step"])

    def close(self) -> None:
        self.run.finish()


def require_sinks(plan: Plan) -> None:
    """Every rank checks before training, so that no rank waits on one that cannot start.

    Raises:
        SinkError: when a sink the plan names has no package installed.
    """
    for name in plan.runtime.metrics_sinks:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise SinkError(f"runtime.metrics_sinks names {name!r}, but the {_PACKAGES[name]!r} package is not "
                            f"installed: pip install {_PACKAGES[name]} (or remove it from metrics_sinks)")


def open_sinks(plan: Plan, stage: TrainStagePlan | PostTrainStagePlan, run: str, run_dir: Path,
               resume_step: int) -> list[MetricsSink]:
    """The sinks `plan.runtime.metrics_sinks` names, opened (on rank 0 only)."""
    require_sinks(plan)
    sinks: list[MetricsSink] = []
    for name in plan.runtime.metrics_sinks:
        if name == "tensorboard":
            sinks.append(TensorBoardSink(run_dir, resume_step))
        else:
            sinks.append(WandbSink(run_dir, plan, stage, run))
    return sinks
