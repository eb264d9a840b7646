"""Data-parallel layout of a stage: HSDP shard groups, micro-batch, gradient accumulation.

torchtitan leaves `dp_shard=-1` to be inferred on the cluster; we settle every number here,
from the memory estimate, so a recipe that cannot fit fails on a laptop.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from olmo2spec.plan.memory import MemoryEstimate

__all__ = ["Layout", "choose_layout", "NoFit", "MAX_GPUS", "MAX_PER_RANK_BATCH"]


@attrs.frozen(kw_only=True)
class Layout:
    shard_gpus: int
    micro_batch: int
    checkpointing: bool
    fsdp_units: str
    memory: MemoryEstimate


class NoFit(Exception):
    """No layout fits; carries the smallest estimate tried and its layout, for the message."""

    def __init__(self, best: MemoryEstimate, shard_gpus: int, micro_batch: int) -> None:
        super().__init__("does not fit")
        self.best = best
        self.shard_gpus = shard_gpus
        self.micro_batch = micro_batch


MAX_GPUS = 2**20
"""Largest world size planned for; with MAX_PER_RANK_BATCH it bounds the layout search (the resolver
refuses more before searching)."""
MAX_PER_RANK_BATCH = 2**24


def _divisors(n: int) -> list[int]:
    """Divisors of n, ascending; trial division up to sqrt(n)."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def shard_candidates(gpus: int, gpus_per_node: int) -> list[int]:
    """Shard group sizes to try, smallest first: one node, then whole numbers of nodes."""
    within = [d for d in _divisors(gpus) if d >= min(gpus_per_node, gpus)]
    nodes_aligned = [d for d in within if d % gpus_per_node == 0 or d == gpus]
    return nodes_aligned or [gpus]


def choose_layout(*, gpus: int, gpus_per_node: int, per_rank_batch: int, shard: int | str,
                  micro_batch: int | str, checkpointing: str, fsdp_units: list[str],
                  estimate: Callable[[int, int, bool, str], MemoryEstimate]) -> Layout:
    """Pick shard group, micro-batch and activation checkpointing; explicit choices are kept.

    Rules (each "auto" is settled in this order):
      1. shard: the smallest candidate group where anything fits.
      2. FSDP units: the first of `fsdp_units` (candidates in order of preference) that fits.
      3. checkpointing: off if some micro-batch fits without it, else on.
      4. micro-batch: the largest divisor of the per-rank batch that fits.

    Raises:
        NoFit: when nothing fits.
    """
    shards = shard_candidates(gpus, gpus_per_node) if shard == "auto" else [int(shard)]
    smallest: tuple[MemoryEstimate, int, int] | None = None
    for group in shards:
        ac_options = {"auto": [False, True], "none": [False], "full": [True]}[checkpointing]
        mb_options = (sorted(_divisors(per_rank_batch), reverse=True) if micro_batch == "auto"
                      else [int(micro_batch)])
        for units in fsdp_units:
            for ac in ac_options:
                for mb in mb_options:
                    mem = estimate(group, mb, ac, units)
                    if mem.total_gib <= mem.capacity_gib:
                        return Layout(shard_gpus=group, micro_batch=mb, checkpointing=ac, fsdp_units=units,
                                      memory=mem)
                    if smallest is None or mem.total_gib < smallest[0].total_gib:
                        smallest = (mem, group, mb)
    assert smallest is not None
    raise NoFit(*smallest)
