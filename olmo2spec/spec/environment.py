"""What `[cluster.env]` may set: an allow-list of variables that tune communication and threading.

A recipe may come from someone else, and many variables make a program run code it was not
asked to: PYTHONPATH, PYTHONSTARTUP and PYTHONWARNINGS (imports a module), LD_PRELOAD and LD_*,
BROWSER, EDITOR and PAGER, NCCL_NET_PLUGIN / NCCL_TUNER_PLUGIN / NCCL_PROFILER_PLUGIN (load a
shared library), NCCL_CONF_FILE (a file that sets those), FI_PROVIDER_PATH, UCX_MODULE_DIR,
TORCHINDUCTOR_* (caches of compiled code), OMP_TOOL_LIBRARIES. A deny-list misses the next one,
so only these families are accepted, and within them no name that points at a file, directory,
library or plugin.
"""

from __future__ import annotations

__all__ = ["ALLOWED_ENV", "ALLOWED_ENV_PREFIXES", "FORBIDDEN_ENV_WORDS", "env_name_problem", "env_value_problem"]

ALLOWED_ENV = frozenset({
    # PyTorch's CUDA caching allocator: segment sizes and garbage collection thresholds
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING",
    # CUDA streams and launches
    "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_LAUNCH_BLOCKING", "CUDA_MODULE_LOADING",
    # gloo's network interface and transport
    "GLOO_SOCKET_IFNAME", "GLOO_DEVICE_TRANSPORT",
    # threads per process
    "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    # torch.distributed's own logging and checks
    "TORCH_DISTRIBUTED_DEBUG", "TORCH_CPP_LOG_LEVEL", "TORCH_SHOW_CPP_STACKTRACES",
})
"""Names accepted as they are."""

ALLOWED_ENV_PREFIXES = (
    "NCCL_",        # NCCL: interfaces, InfiniBand, algorithms, timeouts, logging
    "TORCH_NCCL_",  # torch's NCCL process group: error handling, timeouts, stream use
    "FI_",          # libfabric (EFA, Slingshot): provider choice and tuning
    "UCX_",         # UCX: transports and devices
)
"""Families accepted, less any name with a word of FORBIDDEN_ENV_WORDS."""

FORBIDDEN_ENV_WORDS = frozenset({
    "PLUGIN", "PLUGINS", "FILE", "PATH", "DIR", "LIB", "LIBRARY", "LIBRARIES", "MODULE", "MODULES",
    "PRELOAD", "CONF", "SCRIPT", "CMD", "COMMAND", "EXEC", "HOOK", "DUMP",
})
"""Words (between underscores) that mark a name loading or writing files, within the families."""

MAX_ENV_VALUE = 8192


def env_name_problem(name: str) -> str | None:
    """Why a recipe may not set `name`, or None when it may."""
    if name in ALLOWED_ENV:
        return None
    if name.startswith(ALLOWED_ENV_PREFIXES):
        words = FORBIDDEN_ENV_WORDS.intersection(name.split("_"))
        if not words:
            return None
        return (f"{name} is not among the variables a recipe may set: its {sorted(words)[0]} makes the "
                "process read, load or write a file")
    return (f"{name} is not among the variables a recipe may set (communication and threading only: "
            "some variables make a process run code)")


def env_value_problem(name: str, value: str) -> str | None:
    """Why `value` cannot be the value of `name`, or None: one printable line, bounded."""
    if "\n" in value or "\r" in value or "\0" in value:
        return f"the value of {name} contains a line break or NUL"
    if not value.isprintable():
        return f"the value of {name} contains a control character"
    if len(value) > MAX_ENV_VALUE:
        return f"the value of {name} is {len(value):,} characters, more than {MAX_ENV_VALUE:,}"
    return None
