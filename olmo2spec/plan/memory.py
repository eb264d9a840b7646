"""Memory per GPU under FSDP2: sharded states, transient unsharded blocks, activations, logits.

An estimate, deliberately on the safe side, in the spirit of Korthikanti et al. (2022)
"Reducing Activation Recomputation": what autograd keeps per token per block, in the
parameter dtype, with SDPA (no attention matrix stored). fp32 master weights, fp32 gradients
(reduce_dtype) and two Adam moments are sharded over the FSDP shard group.
"""

from __future__ import annotations

import attrs

from olmo2spec.plan.counts import ParamCounts
from olmo2spec.spec.hardware import Gpu
from olmo2spec.spec.model import ModelSpec

__all__ = ["MemoryEstimate", "estimate_memory", "GIB"]

GIB = 1024**3


@attrs.frozen(kw_only=True)
class MemoryEstimate:
    """Bytes per GPU, shown in GiB."""

    params_gib: float
    """fp32 master parameters, sharded."""
    grads_gib: float
    """fp32 gradients, sharded."""
    optimizer_gib: float
    """Adam moments (2 x fp32), sharded."""
    transient_gib: float
    """Unsharded working copies: the block being computed and the one prefetched, and their grads
    (with fsdp_units = 'model': the whole model and all its grads)."""
    activations_gib: float
    """Saved for backward at this micro-batch and the chosen checkpointing setting."""
    activations_no_ac_gib: float
    """What activations would take without activation checkpointing."""
    activations_full_ac_gib: float
    """What activations would take with every block checkpointed."""
    logits_gib: float
    """Output logits, their fp32 upcast for the loss, and its gradient."""
    reserved_gib: float
    """CUDA context, communication buffers, allocator slack."""
    total_gib: float
    capacity_gib: float


def _activation_elements_per_token(model: ModelSpec) -> int:
    """Elements one block saves per token for backward (no recomputation)."""
    d, f = model.d_model, model.mlp_hidden
    kv = model.n_kv_heads * (d // model.n_heads)
    # attention: input, q/k/v, q/k normed (fp32 inputs count twice), rope'd q/k, sdpa out, o out
    attention = d + (d + 2 * kv) + 2 * (d + kv) + (d + kv) + d + d
    # mlp: input, w1 and w3 outputs, silu output, their product, w2 output; plus two output norms
    mlp = d + 4 * f + d
    return attention + mlp + 2 * d


def estimate_memory(*, model: ModelSpec, counts: ParamCounts, gpu: Gpu, seq_len: int, micro_batch: int,
                    shard_gpus: int, checkpointing: bool, vocab_rows: int, trainable_copies: int = 1,
                    frozen_copies: int = 0, whole_model_unit: bool = False) -> MemoryEstimate:
    """Estimate one GPU's memory for a training step.

    Args:
        trainable_copies: models being trained (RLVR with PPO trains a policy and a value model).
        frozen_copies: models only run forward (a DPO/RLVR reference), held in the compute dtype.
        whole_model_unit: FSDP gathers the whole model at once (fsdp_units = 'model') and keeps it
            through backward, with its unsharded gradients.
    """
    compute_bytes = 4 if gpu.name == "cpu" else 2  # fp32 on CPU, bf16 on GPUs
    p = counts.total * trainable_copies
    params, grads, optim = 4 * p / shard_gpus, 4 * p / shard_gpus, 8 * p / shard_gpus
    frozen = compute_bytes * counts.total * frozen_copies / shard_gpus
    largest_unit = max(counts.per_block, counts.output_head)
    transient = (2 * compute_bytes + 4) * largest_unit  # current + prefetched copy, plus its fp32 grad
    if whole_model_unit:  # one gathered copy of everything, and every unsharded fp32 grad
        transient = (compute_bytes + 4) * counts.total * trainable_copies
    tokens = micro_batch * seq_len
    per_block = _activation_elements_per_token(model) * compute_bytes * tokens
    without = model.n_layers * per_block
    # checkpointing keeps each block's input and recomputes one block at a time
    with_ac = model.n_layers * model.d_model * compute_bytes * tokens + per_block
    activations = with_ac if checkpointing else without
    logits = tokens * vocab_rows * (compute_bytes + 4 + 4)
    parts = [params + frozen, grads, optim, transient, activations * trainable_copies, logits]
    total = sum(parts) / GIB + gpu.reserved_gib
    return MemoryEstimate(
        params_gib=(params + frozen) / GIB, grads_gib=grads / GIB, optimizer_gib=optim / GIB,
        transient_gib=transient / GIB, activations_gib=activations * trainable_copies / GIB,
        activations_no_ac_gib=without * trainable_copies / GIB,
        activations_full_ac_gib=with_ac * trainable_copies / GIB,
        logits_gib=logits / GIB, reserved_gib=gpu.reserved_gib, total_gib=total, capacity_gib=gpu.memory_gib)
