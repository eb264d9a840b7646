"""Checks on each node before a stage starts: GPUs that multiply correctly, disk that takes writes.

Section 6.3 of the paper: a simple matrix multiply on every GPU before a workload, so that a
bad node fails fast (and can be cordoned) instead of corrupting or hanging a long run.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from olmo2spec.runtime.bundle import RunContext

__all__ = ["preflight", "PreflightError"]

GIB = 1024**3


class PreflightError(Exception):
    """This node should not run the stage."""


def _not_a_directory(path: Path) -> Path | None:
    """The file (not a directory) that stands where `path` or one of its parents should be, if any."""
    return next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)


def check_disk(ctx: RunContext) -> str:
    """The run's checkpoint directory exists, takes a write, and has the plan's free space."""
    fix = f"set CHECKPOINT_ROOT (now {ctx.checkpoint_root}) to a directory this node can write"
    try:
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _not_a_directory(ctx.run_dir)
        why = f"{blocker} is a file, not a directory" if blocker is not None else exc.strerror or str(exc)
        raise PreflightError(f"checkpoint directory {ctx.run_dir} cannot be created ({why}): {fix}") from None
    probe = ctx.run_dir / f".preflight-{socket.gethostname()}-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"checkpoint directory {ctx.run_dir} is not writable ({exc.strerror or exc}): "
                             f"{fix}") from None
    free = shutil.disk_usage(ctx.run_dir).free / GIB
    need = ctx.plan.checkpoint.min_free_gib
    if free < need:
        raise PreflightError(f"{free:.1f} GiB free under {ctx.run_dir}, the plan needs {need:g} GiB "
                             "(checkpoint.min_free_gib)")
    return f"{free:,.0f} GiB free in {ctx.run_dir}"


def check_gpus() -> str:
    """Multiply on every visible GPU and compare with the CPU; report each GPU's matmul speed."""
    import torch  # only on nodes that have GPUs to check

    if not torch.cuda.is_available():
        raise PreflightError("OLMO2SPEC_DEVICE=cuda but torch sees no GPU")
    reports = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        generator = torch.Generator().manual_seed(index)
        a = torch.randn(1024, 1024, generator=generator, dtype=torch.float64)
        b = torch.randn(1024, 1024, generator=generator, dtype=torch.float64)
        expected = a @ b
        got = (a.to(device, torch.float32) @ b.to(device, torch.float32)).double().cpu()
        error = (got - expected).abs().max().item()
        if not error < 1e-2:
            raise PreflightError(f"GPU {index} ({torch.cuda.get_device_name(index)}) multiplied wrong: "
                                 f"max error {error:.3g}")
        big = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(5):
            big @ big
        torch.cuda.synchronize(device)
        tflops = 5 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
        reports.append(f"GPU {index} ok ({tflops:.0f} TFLOP/s bf16)")
    return ", ".join(reports)


def preflight(ctx: RunContext) -> list[str]:
    """Run every check that applies to this node; the lines to print.

    Raises:
        PreflightError: naming the failed check and this host.
    """
    host = socket.gethostname()
    try:
        lines = [check_disk(ctx)]
        if os.environ.get("OLMO2SPEC_DEVICE") == "cuda":
            lines.append(check_gpus())
    except PreflightError as exc:
        raise PreflightError(f"{host}: {exc}") from None
    return [f"preflight ok on {host}: {line}" for line in lines]
