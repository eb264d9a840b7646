"""A bundle's stages through a real one-node SLURM cluster: submit.sh -> sbatch -> srun -> torchrun.

Needs a running cluster: `bash .ci/slurm.sh up DIR` (`.ci/run` does it), then OLMO2SPEC_SLURM_DIR=DIR
(and SLURM_CONF=DIR/slurm.conf, the default here). Skipped without OLMO2SPEC_SLURM_DIR, so a plain
`pytest` stays fast; `pytest -m slurm tests/integration` runs only these.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

SLURM_DIR = os.environ.get("OLMO2SPEC_SLURM_DIR", "")
JOB_TIMEOUT = 600.0
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED", "SPECIAL_EXIT"}
# pretrain short enough for 2 CPU cores: 40K tokens is 10 steps of 16 x 256
OVERRIDES = ["stages.pretrain.tokens=40K", "stages.pretrain.lr.warmup_steps=2"]
NOT_YET = "cannot run pretrain stages yet"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not SLURM_DIR, reason="no SLURM cluster: run `.ci/slurm.sh up DIR`, set OLMO2SPEC_SLURM_DIR"),
]


# --- helpers -----------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without SLURM's job variables or olmo2spec's, pointed at the cluster."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OLMO2SPEC_")) and k not in ("CHECKPOINT_ROOT", "DATA_ROOT", "PYTHON")}
    env["SLURM_CONF"] = os.environ.get("SLURM_CONF") or str(Path(SLURM_DIR) / "slurm.conf")
    env["PYTHON"] = sys.executable  # what the sbatch scripts run; the job gets this env (--export=ALL)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _build(out: Path) -> Path:
    from olmo2spec.compiler import check
    from olmo2spec.emit.bundle import build_bundle

    build_bundle(check(SPECS / "tiny.toml", OVERRIDES), out, "tiny")
    return out


def _job(job_id: str, env: dict[str, str]) -> dict[str, str]:
    result = _run(["scontrol", "-o", "show", "job", job_id], env, ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout))


def _log(job: dict[str, str]) -> str:
    path = Path(job.get("StdOut", ""))
    return path.read_text(errors="replace") if path.is_file() else f"(no log at {path})"


def _submit(bundle: Path, env: dict[str, str], stage: str) -> str:
    result = _run(["bash", str(bundle / "launch" / "submit.sh"), "--only", stage], env, bundle.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["stage", "job"]
    match = re.fullmatch(rf"{re.escape(stage)}\s+(\d+)", lines[1])
    assert match and len(lines) == 2, result.stdout  # --only: that stage, nothing else
    return match.group(1)


def _wait(job_id: str, env: dict[str, str], until: set[str] = FINISHED) -> dict[str, str]:
    """Poll `scontrol show job` until the job's state is in `until`; on timeout cancel it and fail."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        job = _job(job_id, env)
        if job["JobState"] in until:
            return job
        if time.monotonic() > deadline:
            _run(["scancel", job_id], env, ROOT)
            pytest.fail(f"job {job_id} still {job['JobState']} after {JOB_TIMEOUT:.0f} s; its log:\n{_log(job)}")
        time.sleep(1)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """The cluster answers and its node takes jobs (OLMO2SPEC_SLURM_DIR set means it should be up: fail, not skip)."""
    env = _env()
    result = _run(["sinfo", "-h", "-o", "%T"], env, ROOT, timeout=30)
    assert result.returncode == 0, f"sinfo failed (SLURM_CONF={env['SLURM_CONF']}): {result.stderr}"
    assert result.stdout.split() and set(result.stdout.split()) <= {"idle", "mixed", "allocated"}, result.stdout
    return env


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus, raw files only (each bundle's prepare stage tokenizes them)."""
    from olmo2spec.data.demo import build_demo_corpus

    root = tmp_path_factory.mktemp("data")
    build_demo_corpus(root)
    return root


# --- tests -------------------------------------------------------------------------------------


def test_pretrain_through_slurm(cluster: dict[str, str], data_root: Path, tmp_path: Path):
    bundle = _build(tmp_path / "tiny")
    checkpoints = tmp_path / "checkpoints"
    env = _env(DATA_ROOT=str(data_root), CHECKPOINT_ROOT=str(checkpoints))
    prepare = _run([sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(bundle), "--stage", "prepare"],
                   env, tmp_path, timeout=300)
    assert prepare.returncode == 0, prepare.stderr

    start = time.monotonic()
    job_id = _submit(bundle, env, "pretrain")
    job = _wait(job_id, env)
    seconds = time.monotonic() - start
    log = _log(job)
    report = f"job {job_id}: {job['JobState']} exit {job['ExitCode']} after {seconds:.0f} s; its log:\n{log}"

    # the plumbing: the job ran in the bundle, its log is where submit.sh puts logs, the preflight ran in it
    assert Path(job["StdOut"]).parent == bundle / "logs", report
    assert Path(job["WorkDir"]) == bundle, report
    assert re.search(r"^preflight ok on \S+: .* GiB free in " + re.escape(str(checkpoints / "pretrain")) + "$",
                     log, re.M), report
    assert NOT_YET not in log, f"the SLURM plumbing works, but the runtime has no pretrain runner\n{report}"

    # the training: the job completed at its first start
    assert job["JobState"] == "COMPLETED", report
    assert job["ExitCode"] == "0:0", report
    assert job.get("Restarts") == "0", report

    # ===== THE CHECKPOINT ASSERTION: the trained run left a complete checkpoint =====
    complete = sorted(checkpoints.glob("pretrain/step-*/COMPLETE"))
    assert complete, f"no $CHECKPOINT_ROOT/pretrain/step-*/COMPLETE under {checkpoints}\n{report}"
    assert json.loads(complete[-1].read_text()).get("final") is True, f"the last checkpoint is not final\n{report}"


FAKE_TRAINER = '''\
"""Stands in for the pretrain stage's entry point: trains until the stop file appears, resumes after a requeue."""
import os
import sys
import time

rank = os.environ.get("RANK", "?")
if os.environ.get("SLURM_RESTART_COUNT", "0") != "0":
    print(f"rank {rank}: resumed after requeue {os.environ['SLURM_RESTART_COUNT']}", flush=True)
    sys.exit(0)
print(f"rank {rank}: training", flush=True)
stop = os.environ["OLMO2SPEC_STOP_FILE"]
deadline = time.monotonic() + 300
while not os.path.exists(stop):
    if time.monotonic() > deadline:
        sys.exit(f"rank {rank}: no stop file {stop} after 300 s")
    time.sleep(0.2)
print(f"rank {rank}: stop file seen: checkpointing and exiting", flush=True)
'''


def test_time_limit_signal_checkpoints_and_requeues(cluster: dict[str, str], tmp_path: Path):
    """The sbatch script's USR1 path with a stand-in trainer: stop file, clean exit, requeue, resume.

    SLURM sends USR1 to the batch shell near the time limit (--signal=B:USR1@...); sending it at once
    with `scancel --batch --signal=USR1` takes the same path without waiting for a time limit.
    """
    bundle = _build(tmp_path / "tiny")
    (bundle / "stages" / "02-pretrain.py").write_text(FAKE_TRAINER)
    checkpoints = tmp_path / "checkpoints"
    env = _env(CHECKPOINT_ROOT=str(checkpoints))

    job_id = _submit(bundle, env, "pretrain")
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:  # wait until both ranks train
        job = _job(job_id, env)
        assert job["JobState"] not in FINISHED, f"job {job_id} ended early: {job['JobState']}\n{_log(job)}"
        if _log(job).count(": training") == 2:
            break
        if time.monotonic() > deadline:
            _run(["scancel", job_id], env, ROOT)
            pytest.fail(f"job {job_id} never started training\n{_log(job)}")
        time.sleep(0.5)
    signal = _run(["scancel", "--batch", "--signal=USR1", job_id], env, ROOT)
    assert signal.returncode == 0, signal.stderr

    # SLURM holds a requeued job back for about 2 minutes (its EligibleTime): let it start now
    job = _wait(job_id, env, until={"PENDING", *FINISHED})
    assert job["JobState"] == "PENDING" and job["Restarts"] == "1", f"not requeued: {job}\n{_log(job)}"
    hurry = _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env, ROOT)
    assert hurry.returncode == 0, hurry.stderr
    job = _wait(job_id, env)
    log = _log(job)
    report = f"job {job_id}: {job['JobState']} exit {job['ExitCode']}, restarts {job.get('Restarts')}; log:\n{log}"
    assert job["JobState"] == "COMPLETED", report
    assert job["ExitCode"] == "0:0", report
    assert job["Restarts"] == "1", report
    assert f"time limit near: checkpointing, then requeueing {job_id}" in log, report
    assert log.count("stop file seen") == 2, report
    assert log.count("resumed after requeue 1") == 2, report
    assert log.count("preflight ok on ") == 2, report  # once per start of the job
    assert not list(checkpoints.glob("pretrain/STOP-*")), report  # the script removed its stop file
