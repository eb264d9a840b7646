"""Parameter counts and FLOPs per token, from the model's shape alone.

Counts match the released checkpoints (e.g. OLMo 2 7B: 7,298,617,344). FLOPs follow two
conventions: Kaplan's 6N (the paper's Table 6, N = all parameters) and the MFU convention of
OLMo-core and torchtitan, 6 x non-embedding parameters + 12 x layers x d_model x seq_len for
attention scores.
"""

from __future__ import annotations

import attrs

from olmo2spec.spec.model import ModelSpec, TokenizerSpec

__all__ = ["ParamCounts", "count_params", "flops_per_token"]


@attrs.frozen(kw_only=True)
class ParamCounts:
    total: int
    """Every parameter, embedding and output head included."""
    non_embedding: int
    """Total less the input embedding (the output head counts: it does matmul work)."""
    embedding: int
    """Input embedding (padded rows x d_model)."""
    output_head: int
    """Untied output projection (padded rows x d_model)."""
    per_block: int
    """One transformer block."""


def count_params(model: ModelSpec, tokenizer: TokenizerSpec) -> ParamCounts:
    d, f = model.d_model, model.mlp_hidden
    kv = model.n_kv_heads * (d // model.n_heads)
    attention = d * d + 2 * d * kv + d * d  # q, k, v, o projections
    mlp = 3 * d * f  # w1, w3 (gate, up) and w2 (down)
    norms = 2 * d + ((d + kv) if model.qk_norm else 0)
    per_block = attention + mlp + norms  # no biases: spec/supported.py refuses model.bias
    embedding = tokenizer.embedding_rows * d
    head = tokenizer.embedding_rows * d
    total = model.n_layers * per_block + d + embedding + head  # + final norm
    return ParamCounts(total=total, non_embedding=total - embedding, embedding=embedding, output_head=head,
                       per_block=per_block)


def flops_per_token(model: ModelSpec, counts: ParamCounts, seq_len: int) -> int:
    """Training FLOPs per token, MFU convention (forward + backward, attention included)."""
    return 6 * counts.non_embedding + 12 * model.n_layers * model.d_model * seq_len
