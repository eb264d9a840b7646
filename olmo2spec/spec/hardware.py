"""What the compiler knows about accelerators: memory and peak throughput."""

from __future__ import annotations

import attrs

__all__ = ["Gpu", "GPUS"]


@attrs.frozen
class Gpu:
    name: str
    memory_gib: float
    """Memory a process can allocate (what torch.cuda reports as total)."""
    peak_tflops: float
    """Dense BF16 peak, the MFU denominator."""
    reserved_gib: float
    """Taken before training starts: CUDA context, NCCL buffers, allocator slack."""


GPUS: dict[str, Gpu] = {
    "h100-80gb": Gpu("h100-80gb", memory_gib=79.1, peak_tflops=989.0, reserved_gib=4.0),
    "h200-141gb": Gpu("h200-141gb", memory_gib=139.8, peak_tflops=989.0, reserved_gib=4.0),
    "a100-80gb": Gpu("a100-80gb", memory_gib=79.2, peak_tflops=312.0, reserved_gib=4.0),
    # A CPU "device" is one gloo process; its budget keeps toy recipes honest on a laptop.
    "cpu": Gpu("cpu", memory_gib=8.0, peak_tflops=0.5, reserved_gib=0.5),
}
