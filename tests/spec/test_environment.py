"""`[cluster.env]` is an allow-list: a recipe tunes communication and threading, and cannot make the
cluster run code (a module imported by PYTHONWARNINGS, a library loaded by LD_PRELOAD or an NCCL plugin).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo2spec.compiler import check
from olmo2spec.spec.diagnostics import SpecError

TINY = str(Path(__file__).resolve().parents[2] / "specs" / "tiny.toml")

RUN_CODE = [
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONWARNINGS", "PYTHONHOME", "PYTHONINSPECT", "PYTHONBREAKPOINT",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BROWSER", "EDITOR", "VISUAL", "PAGER", "GIT_SSH_COMMAND",
    "PERL5OPT", "NODE_OPTIONS", "PROMPT_COMMAND", "NCCL_NET_PLUGIN", "NCCL_TUNER_PLUGIN", "NCCL_PROFILER_PLUGIN",
    "NCCL_CONF_FILE", "NCCL_TOPO_FILE", "NCCL_DEBUG_FILE", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE",
    "TORCH_NCCL_DUMP_ON_TIMEOUT", "FI_PROVIDER_PATH", "UCX_MODULE_DIR", "TORCHINDUCTOR_CACHE_DIR",
    "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCH_EXTENSIONS_DIR", "OMP_TOOL_LIBRARIES", "CUDA_INJECTION64_PATH",
    "HOME", "TMPDIR", "HF_HOME", "TRITON_CACHE_DIR",
]
TUNING = {
    "NCCL_IB_HCA": "mlx5_0,mlx5_1", "NCCL_SOCKET_IFNAME": "=eth0", "NCCL_DEBUG": "INFO", "NCCL_ALGO": "Ring,Tree",
    "NCCL_IB_TIMEOUT": "23", "TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "UCX_TLS": "rc,sm", "GLOO_SOCKET_IFNAME": "eth0",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "TOKENIZERS_PARALLELISM": "false",
}


@pytest.mark.parametrize("name", RUN_CODE)
def test_variables_that_run_or_load_code_are_refused(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        check(TINY, [f'cluster.env.{name}="x"'])
    [error] = [d for d in caught.value.diagnostics if d.severity.value == "error"]
    assert error.code == "E013" and error.field == "cluster.env" and name in error.message
    assert error.location is not None and error.location.file == "--set"


def test_variables_that_tune_communication_and_threading_are_accepted() -> None:
    checked = check(TINY, [f'cluster.env.{name}="{value}"' for name, value in TUNING.items()])
    assert TUNING.items() <= checked.plan.cluster.env.items()


@pytest.mark.parametrize("value", ["a\rb", "a\tb", "\x1b[31m", "a\x7fb", "x" * 8193])
def test_values_are_one_printable_line(value: str) -> None:
    with pytest.raises(SpecError, match="error"):
        check(TINY, [f"cluster.env.NCCL_DEBUG={json.dumps(value)}"])  # JSON's escapes are TOML's
