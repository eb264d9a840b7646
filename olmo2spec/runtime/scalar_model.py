"""The scalar model: the policy's trunk with a `score` head, one number per token (a reward model, PPO's value).

Its trunk is the language model's (runtime/model.py's `Trunk`, the same parameter names), so a
policy's or an SFT/DPO checkpoint loads into it; the policy's `lm_head` is not read. `score` is a
Linear(d_model, 1) without bias (Hugging Face's `*ForSequenceClassification`, which open-instruct's
reward model and value model are). Started from a checkpoint without one (a policy), `score` is
initialised as open-instruct does, N(0, 1 / sqrt(d_model + 1)); a reward model's own checkpoint
holds it, and it is read from there. Loading goes through the one checkpoint owner (`Checkpointer`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from olmo2spec.runtime.checkpoint import Checkpointer, weight_names
from olmo2spec.runtime.model import KVCache, ModelArgs, Trunk

__all__ = ["ScalarModel", "SCORE", "load_scalar_model", "last_token_scores"]

SCORE = "score.weight"
"""The head's weight: what a policy's checkpoint lacks."""


class ScalarModel(Trunk):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args)
        self.score = nn.Linear(args.d_model, 1, bias=False)

    def head(self) -> nn.Module:
        return self.score

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> a scalar per token (B, T), in fp32 (the arguments as `hidden_states` takes them)."""
        scores: torch.Tensor = self.score(self.hidden_states(tokens, positions, cache, doc_ids=doc_ids))
        return scores.squeeze(-1).float()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The trunk as the language model's init; `score` as open-instruct's; RoPE tables."""
        self.init_trunk()
        self.init_score()
        self.init_rope()

    @torch.no_grad()
    def init_score(self) -> None:
        """N(0, 1 / sqrt(d_model + 1)), drawn whole from the process's seed: the same at any world size (DTensor's
        random init of a sharded weight is not, on CPU meshes)."""
        weight = self.score.weight
        draw = torch.Generator().manual_seed(torch.initial_seed())
        full = torch.empty(weight.shape).normal_(std=1 / math.sqrt(self.args.d_model + 1), generator=draw)
        if isinstance(weight, DTensor):
            weight.copy_(distribute_tensor(full.to(weight.device), weight.device_mesh, weight.placements))
        else:
            weight.copy_(full)


def load_scalar_model(checkpointer: Checkpointer, path: Path, model: ScalarModel) -> dict[str, Any]:
    """Load step `path` into `model`: its trunk, and its `score` when it holds one; returns the step's marker
    with "score_loaded" added (False: the step is a policy's, `score` keeps its fresh init)."""
    marker = checkpointer.load(path, model, None, absent_ok=(SCORE,))
    return {**marker, "score_loaded": SCORE in weight_names(path)}


def last_token_scores(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) each row's score at its last real token; scores (B, T), lengths (B,) real tokens of each row (>= 1)."""
    last = (lengths - 1).clamp(min=0).unsqueeze(1)
    return scores.gather(1, last).squeeze(1)
