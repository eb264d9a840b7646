"""AdamW as OLMo 2 uses it: decoupled decay on every weight but the token embedding."""

from __future__ import annotations

import torch
from torch import nn

from olmo2spec.plan.schedule import LrSchedule, lr_at
from olmo2spec.spec.training import OptimizerSpec

__all__ = ["build_optimizer", "apply_lr"]


def _no_decay(name: str, spec: OptimizerSpec) -> bool:
    if name.startswith("embed_tokens.") and not spec.decay_embeddings:
        return True  # section 3.4.2: decaying embeddings shrinks them and raises gradient norms
    return name.endswith("norm.weight") and not spec.decay_norms


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if _no_decay(name, spec) else decay).append(param)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = (spec.betas[0], spec.betas[1])
    return torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=spec.eps, foreach=True)


def apply_lr(optimizer: torch.optim.Optimizer, schedule: LrSchedule, step: int) -> float:
    """Set every group's learning rate for optimizer step `step` (0-based); returns it."""
    lr = lr_at(schedule, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
