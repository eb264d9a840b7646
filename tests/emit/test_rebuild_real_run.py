"""A real run survives a rebuild: prepare and a 4-step pretraining through launch/local.sh, with the
checkpoints in the bundle (the default CHECKPOINT_ROOT), then the recipe edited and rebuilt.

The runtime runs in subprocesses (this process imports no torch); about 45 s on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SPECS

SHORT = ["--set", "stages.pretrain.tokens=16384", "--set", "checkpoint.every_steps=2",
         "--set", "runtime.log_every=2", "--set", "stages.pretrain.lr.warmup_steps=1"]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHECKPOINT_ROOT", "OLMO2SPEC_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "DATA_ROOT": str(data), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _files(root: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_real_checkpoint_survives_a_rebuild_and_is_resumed(tmp_path: Path):
    env = _env(tmp_path / "data")
    cli = [sys.executable, "-m", "olmo2spec.cli"]
    bundle = tmp_path / "tiny"
    _run([*cli, "demo-data", str(tmp_path / "data")], env, tmp_path)
    _run([*cli, "build", str(SPECS / "tiny.toml"), "-o", str(bundle), *SHORT], env, tmp_path)
    _run(["bash", str(bundle / "launch" / "local.sh"), "prepare", "pretrain", "--nproc", "1"], env, tmp_path)
    step = bundle / "checkpoints" / "pretrain" / "step-0000004"
    assert {"COMPLETE", "CHECKSUMS.json", ".metadata", "__0_0.distcp"} <= {p.name for p in step.iterdir()}
    before = _files(bundle / "checkpoints")

    out = _run([*cli, "build", str(SPECS / "tiny.toml"), "-o", str(bundle), *SHORT,
                "--set", "stages.pretrain.lr.peak=4e-3"], env, tmp_path)
    assert "kept from the old bundle: checkpoints" in out
    assert _files(bundle / "checkpoints") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "tiny"]

    # the runtime finds the run where it left it
    out = _run(["bash", str(bundle / "launch" / "local.sh"), "pretrain", "--nproc", "1"], env, tmp_path)
    assert f"pretrain is already complete ({step})" in out
