"""`[cluster]`: the machines a recipe runs on and the figures its estimates use."""

from __future__ import annotations

import re
from typing import Any

import attrs

from olmo2spec.spec.environment import env_name_problem, env_value_problem
from olmo2spec.spec.fields import (
    SpecValueError,
    doc,
    in_range,
    non_negative,
    one_of,
    positive,
    share_of_one,
    shown,
)
from olmo2spec.spec.hardware import GPUS

__all__ = ["ClusterSpec", "SlurmSpec", "RESERVED_ENV"]

_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.,:@%+-]*$")
_TIME_LIMIT = re.compile(r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$")
_SBATCH_OPTION = re.compile(r"^--[a-z][a-z-]*(=[A-Za-z0-9_.,:@%+/=-]+)?$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")

RESERVED_ENV = frozenset({
    # the bundle's scripts' own variables (launch/local.sh, launch/slurm/*.sbatch, ...): a recipe setting
    # DRY_RUN or PYTHON would change what the script runs, a dry run included
    "BUNDLE_DIR", "DEVICE", "DRY_RUN", "FROM", "GPUS", "HEAD_NODE", "MODEL", "NPROC", "PYTHON", "REQUEUE_ID",
    "RUN", "RUNS", "SBATCH_ARGS", "STAGES", "SUBMITTING", "TARGET", "TARGETS", "TRAIN", "TRAIN_PID", "UNTIL",
    # what SLURM tells the job
    "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES",
    # read by shells as code or as rules for running it
    "BASH_ENV", "BASHOPTS", "CDPATH", "ENV", "GLOBIGNORE", "IFS", "PATH", "PS4", "SHELLOPTS",
})
"""`[cluster.env]` names a recipe may not set, nor any name starting with OLMO2SPEC_, BASH_ or JOB_."""
_RESERVED_PREFIXES = ("OLMO2SPEC_", "BASH_", "JOB_")


def _slurm_word(_inst: Any, _attr: Any, value: str) -> None:
    if not _SLURM_WORD.fullmatch(value):
        raise SpecValueError(f"{shown(value)} is not a valid SLURM name",
                             "use letters, digits and _ . , : @ % + - only")


def _time_limit(_inst: Any, _attr: Any, value: str) -> None:
    if not _TIME_LIMIT.fullmatch(value):
        raise SpecValueError(f"{shown(value)} is not a SLURM time limit",
                             "write HH:MM:SS or D-HH:MM:SS, e.g. \"2-00:00:00\"")


def _sbatch_options(_inst: Any, _attr: Any, value: list[str]) -> None:
    for option in value:
        if not _SBATCH_OPTION.fullmatch(option):
            raise SpecValueError(f"{shown(option)} is not an sbatch option this bundle can pass safely",
                                 "write --name or --name=value, the value without spaces or quotes, "
                                 "e.g. \"--constraint=h100\"")


def _env_names(_inst: Any, _attr: Any, value: dict[str, str]) -> None:
    for name, text in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise SpecValueError(f"{shown(name)} is not an environment variable name",
                                 "use A-Z, 0-9 and _, e.g. NCCL_IB_HCA")
        if name in RESERVED_ENV or name.startswith(_RESERVED_PREFIXES):
            raise SpecValueError(f"{name} is set by the bundle's scripts or read by the shell: a recipe cannot "
                                 "set it", "pick another name; PATH, PYTHON and the like belong to whoever runs "
                                 "the bundle")
        problem = env_name_problem(name)
        if problem:
            raise SpecValueError(problem, "a recipe may set NCCL_*, TORCH_NCCL_*, FI_*, UCX_* (none naming a file, "
                                 "library or plugin), PYTORCH_CUDA_ALLOC_CONF, OMP_NUM_THREADS and a few more: see "
                                 "\"What a recipe may do\" in the README")
        problem = env_value_problem(name, text)
        if problem:
            raise SpecValueError(problem, "write it on one line of printable characters")


@attrs.frozen(kw_only=True)
class SlurmSpec:
    """`[cluster.slurm]`: how each stage's job is submitted."""

    partition: str = doc("Partition (sbatch --partition); empty: the cluster's default.", default="",
                         validator=_slurm_word)
    account: str = doc("Account to charge (sbatch --account); empty: none.", default="", validator=_slurm_word)
    qos: str = doc("Quality of service (sbatch --qos); empty: none.", default="", validator=_slurm_word)
    time_limit: str = doc("Wall-clock limit per job; long stages checkpoint and requeue when it nears.",
                          default="48:00:00", validator=_time_limit)
    signal_seconds: int = doc("Seconds before the time limit at which the job is told to checkpoint and "
                              "requeue (sbatch --signal).", default=600, validator=in_range(60, 86_400))
    exclusive: bool = doc("Ask for whole nodes (sbatch --exclusive).", default=True)
    extra: list[str] = doc("More sbatch options, e.g. [\"--constraint=h100\"].", factory=list,
                           validator=_sbatch_options)


@attrs.frozen(kw_only=True)
class ClusterSpec:
    """Nodes, accelerators, and the efficiency figures of the data centre (section 6.5)."""

    gpu: str = doc("Accelerator kind; 'cpu' runs gloo processes.", default="h100-80gb",
                   validator=one_of(tuple(GPUS)))
    nodes: int = doc("Nodes for training stages (a stage may ask for fewer).", validator=positive)
    gpus_per_node: int = doc("Accelerators (or CPU processes) per node.", default=8, validator=positive)
    mfu: float = doc("Model FLOPs utilisation assumed by the GPU-hour estimate.", default=0.4,
                     validator=share_of_one)
    gpu_power_kw: float = doc(
        "Average power per GPU under load, its share of the host included. 1.13 kW reproduces the "
        "7B figure of Table 19 (131 MWh) at 45% MFU.", default=1.13, validator=positive)
    pue: float = doc("Power usage effectiveness of the data centre (Table 19).", default=1.2, validator=positive)
    carbon_intensity: float = doc("kg CO2 per kWh of the local grid (Table 19).", default=0.332,
                                  validator=non_negative)
    wue: float = doc("Litres of water per kWh, onsite plus offsite (Table 19).", default=1.29,
                     validator=non_negative)
    rdzv_port: int = doc("TCP port of the c10d rendezvous on a job's first node.", default=29500,
                         validator=in_range(1024, 65535))
    env: dict[str, str] = doc("Environment for every training process, added to (or replacing) the plan's "
                              "NCCL / InfiniBand defaults, e.g. { NCCL_IB_HCA = \"mlx5\" }.", factory=dict,
                              validator=_env_names)
    slurm: SlurmSpec = doc("How jobs are submitted.", factory=SlurmSpec)
