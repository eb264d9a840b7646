"""PPO's value model in an RLVR run: a ScalarModel trained beside the policy, checkpointed beside it.

The value model is the policy's trunk with a scalar head (runtime/scalar_model.py). Each RLVR run
starts it afresh (open-instruct resets the value function at every RLVR run, chained ones too):
from the reward model's final checkpoint when the stage names one (`value_from`), else from the
run's start checkpoint (the policy's trunk) with a zero head, so its first values are 0.

Its weights and optimizer state are saved with every policy checkpoint, in `<run dir>/value/`,
at the same steps: `PairedCheckpointer` saves the value model first and waits for it, so a
policy step marked complete always has its value step complete beside it, and a resumed run
loads both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from olmo2spec.runtime.checkpoint import Checkpointer, CheckpointError, step_dir
from olmo2spec.runtime.scalar_model import ScalarModel, load_scalar_model

__all__ = ["VALUE_DIR", "PairedCheckpointer", "start_value_model"]

VALUE_DIR = "value"


class PairedCheckpointer:
    """The policy's Checkpointer, with the value model and its optimizer saved and loaded at the same steps."""

    def __init__(self, policy: Checkpointer, value: Checkpointer, model: ScalarModel,
                 optimizer: torch.optim.Optimizer) -> None:
        self.policy, self.value = policy, value
        self.value_model, self.value_optimizer = model, optimizer

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any], *,
             final: bool = False) -> Path:
        self.value.save(step, self.value_model, self.value_optimizer, meta, final=final)
        self.value.finish()  # complete before the policy's step is: a complete policy step has its value step
        return self.policy.save(step, model, optimizer, meta, final=final)

    def load(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
             **kwargs: Any) -> dict[str, Any]:
        marker = self.policy.load(path, model, optimizer, **kwargs)
        if optimizer is not None:  # resuming this run: its value model of the same step
            value_path = step_dir(self.value.run_dir, int(marker["step"]))
            if not value_path.exists():
                raise CheckpointError(f"{path} has no value model beside it ({value_path} is missing): delete {path} "
                                      "to resume from the checkpoint before it")
            self.value.load(value_path, self.value_model, self.value_optimizer)
        return marker

    def finish(self) -> None:
        self.value.finish()
        self.policy.finish()


@torch.no_grad()
def start_value_model(checkpointer: Checkpointer, model: ScalarModel, reward_model: Path | None, policy_start: Path
                      ) -> str:
    """Load the value model's start; returns what it started from, for the log."""
    if reward_model is not None:
        marker = load_scalar_model(checkpointer, reward_model, model)
        if not marker["score_loaded"]:
            raise CheckpointError(f"{reward_model} holds no score head: value_from must name a reward stage")
        return f"the reward model {reward_model}"
    load_scalar_model(checkpointer, policy_start, model)
    torch.nn.init.zeros_(model.score.weight)
    return f"the policy's trunk at {policy_start} with a zero head (no reward model named)"
