"""Checkpoints: the one place that knows what a step is, which one a consumer uses, and how it is read.

Layout of a run's directory ($CHECKPOINT_ROOT/<run>):
    step-0000100/                 a DCP checkpoint: {"model": ..., "optim": ...} plus `.metadata`
    step-0000100/extra-rank0.pt   per-rank extras (RNG states)
    step-0000100/plan.json        the plan it was trained with (written by rank 0): the step describes itself
    step-0000100/CHECKSUMS.json   size and sha256 of every file above, gathered from the ranks that wrote them
    step-0000100/COMPLETE         written by rank 0 after every rank finished: what makes it count

- `steps`: names of step directories, which are complete, the newest.
- `integrity`: the COMPLETE marker and checksums under every load (`seal`, `verify`, `marker_digest`).
- `resolve`: the step a consumer uses (a run's newest or final one, or a step named directly).
- `fit`: whether a step holds a plan's model, which weights it holds; `described`: the plan a step carries.
- `weights`: a step's model weights in one process; `checkpointer`: a run's distributed saves and resumes.
Consumers import from this package, not from its modules.
"""

from olmo2spec.runtime.checkpoint.checkpointer import Checkpointer
from olmo2spec.runtime.checkpoint.described import PLAN, plan_of, step_plan, write_plan
from olmo2spec.runtime.checkpoint.fit import check_fits, misfit, model_shapes, strip_wrappers, weight_names
from olmo2spec.runtime.checkpoint.integrity import (
    CHECKSUMS,
    CheckpointError,
    advice,
    checksums_of,
    dcp_cause,
    marker_digest,
    model_files,
    rank_files,
    read_marker,
    read_metadata,
    seal,
    verify,
)
from olmo2spec.runtime.checkpoint.resolve import final_step, newest_step, resolve_step
from olmo2spec.runtime.checkpoint.steps import COMPLETE, complete_steps, is_complete, latest_complete, step_dir
from olmo2spec.runtime.checkpoint.weights import load_model_weights, plan_model_weights

__all__ = [
    "COMPLETE", "CHECKSUMS", "CheckpointError", "Checkpointer",
    "step_dir", "is_complete", "complete_steps", "latest_complete",
    "newest_step", "final_step", "resolve_step",
    "read_marker", "marker_digest", "verify", "model_files", "read_metadata", "advice", "dcp_cause", "rank_files",
    "checksums_of", "seal",
    "PLAN", "step_plan", "write_plan", "plan_of",
    "strip_wrappers", "model_shapes", "misfit", "check_fits", "weight_names",
    "load_model_weights", "plan_model_weights",
]
