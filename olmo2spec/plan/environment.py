"""The environment every training process starts with, before a recipe's `[cluster.env]`."""

from __future__ import annotations

__all__ = ["TRAINING_ENV", "training_env"]

TRAINING_ENV: dict[str, str] = {
    # Fewer out-of-memory failures from fragmentation with FSDP2's changing shapes.
    "PYTORCH_ALLOC_CONF": "expandable_segments:True",
    # A failed or hung collective ends the job (so it can requeue) instead of hanging it.
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
    # FSDP2 manages its own streams; record_stream only delays frees.
    "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",
    "NCCL_DEBUG": "WARN",
    # InfiniBand: use it, and wait longer before declaring a link dead (2^22 x 4.096 us).
    "NCCL_IB_DISABLE": "0",
    "NCCL_IB_TIMEOUT": "22",
    # CPU threads per rank for data loading and host work; 8 ranks share a node.
    "OMP_NUM_THREADS": "8",
    "PYTHONUNBUFFERED": "1",
}


def training_env(gpu: bool) -> dict[str, str]:
    """The defaults for a GPU cluster, or for CPU processes (one thread each: they share the cores)."""
    return dict(TRAINING_ENV) if gpu else {**TRAINING_ENV, "OMP_NUM_THREADS": "1"}
