"""The DPO loss (Rafailov et al. 2023) and its length-normalised form (Tulu 3 / OLMo 2 Instruct's `dpo_norm`).

A response's log-probability is the sum of its trained tokens' log-probs; `dpo_norm` divides it by
the number of those tokens (open-instruct's `dpo_norm`, SimPO's average). With the policy's and the
frozen reference's values for the chosen (c) and rejected (r) responses:

    loss = -logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

and the rewards are beta * (pi - ref) of each side (TRL's and open-instruct's `chosen_rewards`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from olmo2spec.data.sft_batches import IGNORE

__all__ = ["LOSSES", "response_logps", "dpo_losses"]

LOSSES = ("dpo_norm", "dpo")


def response_logps(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """(R,) the log-probability of each row's labelled tokens: summed (`dpo`) or averaged (`dpo_norm`).

    logits (R, T, V), labels (R, T) with IGNORE where a position is not a response token's prediction.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: not one of {', '.join(LOSSES)}")
    token_logps = -F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                   reduction="none").view(labels.shape)  # 0 where IGNORE
    summed = token_logps.sum(-1)
    if loss == "dpo":
        return summed
    return summed / (labels != IGNORE).sum(-1).clamp(min=1)


def dpo_losses(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
               reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: (loss, chosen reward, rejected reward); the rewards carry no gradient."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
