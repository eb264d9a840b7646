"""The GPU check the runtime issue names, as one short script for a lent H100/H200.

Trains a 1B-shaped OLMo 2 model (d_model 2048, 16 layers, 16 heads, MLP 8192, 100,352 rows,
seq 4096) for a few dozen steps with bf16 FSDP2 (MixedPrecisionPolicy param bf16 / reduce
fp32), per-block torch.compile, NCCL, on every visible GPU, synthetic tokens; prints
tokens/s/GPU and MFU beside OLMo-core's published 55,000 tokens/s/GPU for OLMo 2 1B on an
H100. With CKPT=1 (the default) it then saves model and optimizer through the runtime's DCP
checkpointer, reloads them after one more step and checks the loss on a fixed batch returns
bit for bit. Run: torchrun --standalone --nproc-per-node $(nvidia-smi -L | wc -l) benchmarks/gpu_check.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from olmo2spec.runtime.checkpoint import Checkpointer
from olmo2spec.runtime.loss import labels_for, loss_sums
from olmo2spec.runtime.model import ModelArgs, Transformer
from olmo2spec.runtime.optim import build_optimizer
from olmo2spec.runtime.parallelize import apply_parallelism, build_mesh
from olmo2spec.spec.training import OptimizerSpec

PUBLISHED = 55_000  # OLMo-core, OLMo 2 1B, H100, bf16
PEAK = 989e12  # dense bf16, H100 SXM
SEQ, MICRO, WARMUP, STEPS = 4096, int(os.environ.get("MICRO", "4")), 5, int(os.environ.get("STEPS", "30"))


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    args = ModelArgs(d_model=2048, n_layers=16, n_heads=16, n_kv_heads=16, mlp_hidden=8192, vocab_rows=100_352,
                     max_seq_len=SEQ)
    with torch.device("meta"):
        model = Transformer(args)
    model = apply_parallelism(model, build_mesh("cuda", world, world), bf16=True, activation_checkpointing=False,
                              compile_blocks=os.environ.get("COMPILE", "1") == "1")
    model.to_empty(device="cuda")
    model.init_weights()
    optimizer = build_optimizer(model, OptimizerSpec())
    for group in optimizer.param_groups:
        group["lr"] = 4e-4
    tokens = torch.randint(0, 100_278, (MICRO, SEQ), device="cuda")
    labels = labels_for(tokens, torch.ones(MICRO, dtype=torch.bool, device="cuda"))
    non_embedding = model.num_params() - args.vocab_rows * args.d_model
    flops_per_token = 6 * non_embedding + 12 * args.n_layers * args.d_model * SEQ
    losses = []
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            torch.cuda.synchronize()
            start = time.perf_counter()
        ce, z, n = loss_sums(model(tokens), labels, 1e-5)
        ((ce + z) / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(ce.detach() / n)
    torch.cuda.synchronize()
    per_gpu = STEPS * MICRO * SEQ / (time.perf_counter() - start)
    if rank == 0:
        print(f"{torch.cuda.get_device_name()} x {world}: loss {losses[0].item():.3f} -> {losses[-1].item():.3f}, "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        mfu = per_gpu * flops_per_token / PEAK
        print(f"tokens/s/GPU {per_gpu:,.0f} (OLMo-core published {PUBLISHED:,}), MFU {mfu:.1%}")
        print(f"bench gpu-1b: ours={per_gpu:.0f} tokens/s/GPU baseline={PUBLISHED} tokens/s/GPU "
              f"ratio={per_gpu / PUBLISHED:.3f}")
    if os.environ.get("CKPT", "1") == "1":
        check_checkpoint(model, optimizer, tokens, labels, rank)
    dist.destroy_process_group()


def check_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
                     labels: torch.Tensor, rank: int) -> None:
    """DCP round trip on CUDA: the loss on a fixed batch after reload equals the loss before the detour step."""
    def fixed_loss() -> float:
        with torch.no_grad():
            ce, _, n = loss_sums(model(tokens), labels, 1e-5)
        return (ce / n).item()

    root = Path(os.environ.get("CKPT_DIR", tempfile.gettempdir())) / "gpu-check-ckpt"
    checkpointer = Checkpointer(root, keep_last=1, permanent_every=0)
    before = fixed_loss()
    torch.cuda.synchronize()
    start = time.perf_counter()
    path = checkpointer.save(1, model, optimizer, {"check": True}, final=True)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    ce, z, n = loss_sums(model(tokens), labels, 1e-5)  # the detour: one more step moves the weights
    ((ce + z) / n).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    moved = fixed_loss()
    checkpointer.load(path, model, optimizer)
    after = fixed_loss()
    if rank == 0:
        print(f"checkpoint: {size / 2**30:.1f} GiB (rank 0's share of files) in {seconds:.1f} s; "
              f"loss {before:.6f} -> detour {moved:.6f} -> reloaded {after:.6f}: "
              f"{'bit-exact' if after == before else 'MISMATCH'}")


if __name__ == "__main__":
    main()
