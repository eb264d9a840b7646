"""The arithmetic of RLVR (PPO and GRPO), as pure functions of tensors with masks.

Every per-token tensor is (B, T) over the response tokens of B episodes; `mask` (B, T) is True on
a response's tokens (from its first, contiguous: right padding), False on the padding after it.
Nothing here reduces over padding, and nothing divides by a count that can be zero without a
guard. The formulas are the ones open-instruct's PPO and GRPO trainers use (and TRL's):

- KL estimators of KL(policy || reference) per token from log_ratio = log p(x) - log p_ref(x),
  with x sampled from the policy (Schulman, "Approximating KL divergence"): k1 = log_ratio,
  k2 = log_ratio^2 / 2, k3 = exp(-log_ratio) - 1 + log_ratio (unbiased and never negative).
- GRPO: a prompt's `group` episodes are consecutive rows; advantage = (r - group mean) /
  (group std + eps), the sample std (n - 1), and 0 for a group of one.
- PPO: per-token rewards -beta x KL, the episode's scalar reward added at its last token; GAE.
- Clipped losses: PPO's surrogate max(-A r, -A clip(r, 1 - eps, 1 + eps)) per token, and the
  value loss 0.5 max((v - R)^2, (v_clipped - R)^2).
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["KlEstimator", "KL_ESTIMATORS", "masked_sum", "masked_mean", "masked_var", "masked_whiten", "kl_per_token",
           "grpo_advantages", "ppo_rewards", "gae", "clipped_policy_loss", "clipped_value_loss", "last_index"]

KlEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    kept = x * mask
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the True entries of mask (over all, or along `dim`); 0 where there are none."""
    return masked_sum(x, mask, dim) / masked_sum(torch.ones_like(x), mask, dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x's masked entries (Bessel-corrected by default, as open-instruct's whiten)."""
    mean = masked_mean(x, mask)
    count = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries; padding left 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_per_token(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """KL(policy || reference) per token from the two models' log-probs of the sampled tokens."""
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return log_ratio.pow(2) / 2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"KL estimator {estimator!r}: use one of {', '.join(KL_ESTIMATORS)}")


def grpo_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-8) -> torch.Tensor:
    """(B,) episode rewards, `group` consecutive episodes per prompt -> (B,) group-normalised advantages."""
    if rewards.numel() % group:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group}")
    grouped = rewards.view(-1, group)
    if group == 1:
        return torch.zeros_like(rewards)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)  # n - 1, as torch's default and open-instruct's
    return ((grouped - mean) / (std + eps)).view(-1)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last response token (0 for an empty response)."""
    return (mask.long().sum(dim=1) - 1).clamp(min=0)


def ppo_rewards(kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards: -beta x KL on each response token, the episode's score added at its last token."""
    rewards = -beta * kl * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: (advantages, returns), both (B, T), 0 on padding.

    delta_t = r_t + gamma v_{t+1} - v_t (v past a response's end is 0), A_t = delta_t + gamma lambda A_{t+1}.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        after = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * after - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate loss and whether the clip was the larger term (the clip fraction's numerator).

    advantages: (B, T) per token, or (B, 1) one per episode (GRPO).
    """
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return torch.maximum(unclipped, clipped), (clipped > unclipped)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token value loss 0.5 max((v - R)^2, (v_clip - R)^2), v_clip within clip_eps of the old value."""
    clipped_values = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    plain, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(plain, clipped), (clipped > plain)
