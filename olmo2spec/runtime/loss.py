"""Cross-entropy plus z-loss (1e-5 x logsumexp^2) over the same unmasked tokens.

Both come from one logsumexp over the logits (CE = lse - logit of the label), and are
returned as sums with the token count, so micro-batches and ranks add up exactly and the
caller divides once by the batch's token count. Labels keep the logits' shape (the last
position is ignored), so no shifted copy of the logits is made.
"""

from __future__ import annotations

import torch

__all__ = ["IGNORE", "labels_for", "loss_sums", "weighted_ce"]

IGNORE = -100


def labels_for(tokens: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Next-token labels (B, T): position t predicts token t+1; the last position and the rows of
    masked instances (repeated n-grams) are ignored."""
    labels = torch.full_like(tokens, IGNORE)
    labels[:, :-1] = tokens[:, 1:]
    labels[~label_mask] = IGNORE
    return labels


def loss_sums(logits: torch.Tensor, labels: torch.Tensor, z_weight: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy sum, z-loss sum, tokens counted) of logits (B, T, V) against labels (B, T)."""
    logits = logits.flatten(0, 1).float()  # (B*T, V), in fp32 as OLMo computes its loss
    labels = labels.flatten()
    valid = labels != IGNORE
    lse = torch.logsumexp(logits, dim=-1)  # (B*T,)
    target = logits.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
    ce = ((lse - target) * valid).sum()
    z = (lse.pow(2) * valid).sum() * z_weight
    return ce, z, valid.sum()


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over tokens of weight x cross-entropy (fp32), for logits (B, T, V), labels and weights (B, T)
    (a weight of 0 where the label is IGNORE): the loss of a step whose weights sum its tokens as it wants."""
    logits = logits.flatten(0, 1).float()
    labels = labels.flatten()
    lse = torch.logsumexp(logits, dim=-1)
    target = logits.gather(1, labels.clamp(min=0).unsqueeze(1)).squeeze(1)
    return ((lse - target) * weights.flatten().float()).sum()
