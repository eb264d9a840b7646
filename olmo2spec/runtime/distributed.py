"""The process group a stage runs in: torchrun's when launched by it, else a group of one."""

from __future__ import annotations

import datetime
import os

import attrs
import torch
import torch.distributed as dist

__all__ = ["Dist", "init_distributed", "shutdown"]


@attrs.frozen
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    metrics_group: dist.ProcessGroup | None
    """A gloo group for the bookkeeping thread, apart from the training collectives."""
    checkpoint_group: dist.ProcessGroup | None
    """A gloo group for background checkpoint writes."""

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(want_cuda: bool) -> Dist:
    """Join torchrun's group (NCCL on GPUs, gloo on CPU), or make a group of one."""
    cuda = want_cuda and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    timeout = datetime.timedelta(minutes=30)
    if "RANK" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        local_rank = 0
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    metrics = dist.new_group(backend="gloo") if world > 1 else None
    checkpoints = dist.new_group(backend="gloo")
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=device, metrics_group=metrics,
                checkpoint_group=checkpoints)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
