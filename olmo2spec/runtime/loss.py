"""Cross-entropy plus z-loss (1e-5 x logsumexp^2) over the same unmasked tokens.

Both are returned as sums with the token count, so micro-batches and ranks add up exactly
and the caller divides once by the batch's token count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IGNORE", "labels_for", "loss_sums"]

IGNORE = -100


def labels_for(tokens: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Next-token labels (B, T-1); rows whose instance is masked (repeated n-grams) are ignored."""
    labels = tokens[:, 1:].clone()
    labels[~label_mask] = IGNORE
    return labels


def loss_sums(logits: torch.Tensor, labels: torch.Tensor, z_weight: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy sum, z-loss sum, tokens counted) of logits (B, T, V) against labels (B, T-1)."""
    logits = logits[:, :-1].float().flatten(0, 1)  # (B*(T-1), V), in fp32 as OLMo computes its loss
    labels = labels.flatten()
    valid = labels != IGNORE
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    z = (torch.logsumexp(logits, dim=-1).pow(2) * valid).sum() * z_weight
    return ce, z, valid.sum()
