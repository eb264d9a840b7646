"""Helpers of the runtime tests: a tiny bundle with prepared demo data, runs of its pretraining.

The session fixtures that use them (`bundle`, `uninterrupted`) are in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from olmo2spec.compiler import check
from olmo2spec.data.demo import build_demo_corpus
from olmo2spec.emit.bundle import build_bundle

SPECS = Path(__file__).resolve().parents[2] / "specs"
STEPS = 16
OVERRIDES = [
    f"stages.pretrain.tokens={STEPS * 16 * 256}", "checkpoint.every_steps=4", "runtime.log_every=2",
    "checkpoint.keep_last=10", "stages.pretrain.lr.warmup_steps=4", "checkpoint.async_save=true",
    "stages.anneal.tokens=16384", "stages.anneal.seeds=[42]",
]


def make_bundle(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("resume")
    build_demo_corpus(root / "data")
    build_bundle(check(SPECS / "tiny.toml", OVERRIDES), root / "bundle", "tiny.toml")
    env = _env(root, root / "prep")
    subprocess.run([sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(root / "bundle"), "--stage",
                    "prepare"], env=env, check=True, capture_output=True)
    return root


def _env(root: Path, checkpoints: Path) -> dict[str, str]:
    return {**os.environ, "DATA_ROOT": str(root / "data"), "CHECKPOINT_ROOT": str(checkpoints),
            "OLMO2SPEC_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


def _pretrain(root: Path, checkpoints: Path, nproc: int, bundle: str = "bundle") -> subprocess.Popen[bytes]:
    entry = root / bundle / "stages" / "02-pretrain.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(entry),
           "--run-name", "pretrain"]
    return subprocess.Popen(cmd, env=_env(root, checkpoints), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _losses(checkpoints: Path, key: str = "loss") -> dict[int, float]:
    lines = (checkpoints / "pretrain" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines)}


def _finish(process: subprocess.Popen[bytes]) -> str:
    out, _ = process.communicate(timeout=600)
    text = out.decode()
    assert process.returncode == 0, text
    return text


def run_uninterrupted(bundle):  # type: ignore[no-untyped-def]
    checkpoints = bundle / "ckpt-a"
    _finish(_pretrain(bundle, checkpoints, 2))
    return checkpoints


