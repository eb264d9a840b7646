"""A step's model weights in one process, without a process group (export, eval, tests): verified, then read.

The optimizer state is never read. `Checkpointer.load` is the distributed load (model, or model and optimizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from olmo2spec.plan.plan import Plan
from olmo2spec.runtime.checkpoint.fit import check_fits, strip_wrappers
from olmo2spec.runtime.checkpoint.integrity import CheckpointError, model_files, unreadable

__all__ = ["load_model_weights", "plan_model_weights"]


def load_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights as one plain state dict, named as saved.

    The files it reads are verified first.

    Raises:
        CheckpointError: a damaged step (naming the file), or one DCP cannot read.
    """
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    model_files(path)
    state: dict[str, Any] = {}
    planner = _EmptyStateDictLoadPlanner(keys={"model"})  # the optimizer state is never read
    try:
        _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(path)), planner=planner, no_dist=True)
    except (CheckpointException, RuntimeError, OSError, ValueError) as exc:  # a step from before checksums
        raise unreadable(path, exc) from None
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {path} holds no model weights (no `model.` entries): is it a checkpoint?")
    return {k: v for k, v in state["model"].items()}


def plan_model_weights(path: Path, plan: Plan) -> dict[str, torch.Tensor]:
    """The weights of step `path` named as `plan`'s bare model names them, checked to be that model's.

    Raises:
        CheckpointError: a damaged step, or weights that are not the plan's model (naming the first difference).
    """
    weights = {strip_wrappers(k): v for k, v in load_model_weights(path).items()}
    check_fits(path, plan, weights)
    return weights
