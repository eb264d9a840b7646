"""Apply the plan's parallelism to the model, in one fixed order (torchtitan's parallelize_llama).

activation checkpointing -> per-block torch.compile -> FSDP2 (`fully_shard`) on the embedding,
each block, [final norm, output head (LM or score)], then the root; or, with `fsdp_units = "model"`, on the root
alone, gathered once per step and kept through backward. HSDP when the plan replicates across
shard groups: a 2-D device mesh (replicate, shard). The plan decides what is on; this module
only applies it. Either way each parameter is sharded the same (dim 0 over the shard group), so
the numbers a step computes do not depend on the units: only how many collectives it takes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from olmo2spec.runtime.model import Trunk

__all__ = ["build_mesh", "apply_parallelism"]


def build_mesh(device_type: str, world_size: int, shard: int) -> DeviceMesh:
    """A 1-D mesh (plain FSDP) or (replicate, shard) for HSDP; `shard` is clipped to the world."""
    shard = max(1, min(shard, world_size))
    if world_size % shard:
        shard = world_size  # a local run at another size: shard over everything
    if shard == world_size:
        return init_device_mesh(device_type, (world_size,), mesh_dim_names=("shard",))
    return init_device_mesh(device_type, (world_size // shard, shard), mesh_dim_names=("replicate", "shard"))


def apply_parallelism(model: Trunk, mesh: DeviceMesh, *, bf16: bool, activation_checkpointing: bool,
                      compile_blocks: bool, fsdp_units: str = "block") -> FSDPModule:
    """Shard `model` in place; returns it as FSDP's root module (gradient sync), the same object."""
    layers: list[nn.Module] = list(model.layers)
    if activation_checkpointing:
        layers = [checkpoint_wrapper(layer, preserve_rng_state=False) for layer in layers]
    if compile_blocks:  # after AC wrapping and before FSDP, so each compiled block is one FSDP unit
        layers = [_compiled(layer) for layer in layers]
    model.layers = nn.ModuleList(layers)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    if fsdp_units == "model":  # one all-gather and one reduce-scatter a step
        return fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    fully_shard(model.embed_tokens, mesh=mesh, mp_policy=policy)
    for i, layer in enumerate(model.layers):
        # the last block's parameters are needed again at once by backward: keep them gathered
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=i < len(model.layers) - 1)
    fully_shard([model.norm, model.head()], mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    return fully_shard(model, mesh=mesh, mp_policy=policy)


def _compiled(layer: nn.Module) -> nn.Module:
    compiled = torch.compile(layer, fullgraph=True)
    assert isinstance(compiled, nn.Module)  # an OptimizedModule around `layer` (torch types it as a callable)
    return compiled
