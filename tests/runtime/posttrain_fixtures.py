"""Helpers of the post-training run tests (test_sft_run.py, test_dpo_run.py): demo data, a tiny bundle and a
start checkpoint for the stage, and the stage run as a process, as a user or launch/local.sh starts it.

The module fixture that uses them (`posttrain_root`) is in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from olmo2spec.compiler import check
from olmo2spec.data.demo import build_demo_corpus
from olmo2spec.emit.bundle import build_bundle
from olmo2spec.runtime.checkpoint import Checkpointer
from olmo2spec.runtime.model import ModelArgs, Transformer

SPECS = Path(__file__).resolve().parents[2] / "specs"


def make_posttrain_root(tmp_path_factory, stage: str, overrides: list[str]) -> Path:  # type: ignore[no-untyped-def]
    """Demo data, the tiny bundle with `overrides`, and under start/ a random model saved final as the run
    `stage` starts from (the soup for sft, sft for dpo)."""
    root = tmp_path_factory.mktemp(stage)
    build_demo_corpus(root / "data")
    result = check(SPECS / "tiny.toml", overrides)
    build_bundle(result, root / "bundle", "tiny.toml")
    start = result.plan.stage(stage).init_from
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(result.plan))
    model.init_weights()
    with warnings.catch_warnings():  # DCP without a process group: "assuming ... a single process"
        warnings.simplefilter("ignore")
        Checkpointer(root / "start" / start, keep_last=1, permanent_every=0).save(
            0, model, torch.optim.AdamW(model.parameters()), {"run": start}, final=True)
    return root


def start_run(root: Path, stage: str, checkpoints: Path, data: Path | None = None, start: bool = True,
              nproc: int = 1) -> subprocess.Popen[bytes]:
    """Run `stage` of root's bundle into `checkpoints` (given the start checkpoint unless `start` is False):
    one process by the runtime's CLI, or `nproc` as launch/local.sh starts them."""
    (start_dir,) = (root / "start").iterdir()
    if start and not (checkpoints / start_dir.name).exists():
        shutil.copytree(start_dir, checkpoints / start_dir.name)
    env = {**os.environ, "DATA_ROOT": str(data or root / "data"), "CHECKPOINT_ROOT": str(checkpoints),
           "OLMO2SPEC_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(root / "bundle"), "--stage", stage]
    else:  # as launch/local.sh starts it
        (entry,) = (root / "bundle" / "stages").glob(f"[0-9][0-9]-{stage}.py")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(entry), "--run-name", stage]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """Wait for a run (10 minutes at most): (exit code, stdout, stderr)."""
    out, err = process.communicate(timeout=600)
    return process.returncode, out.decode(), err.decode()
