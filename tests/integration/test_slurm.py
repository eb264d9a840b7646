"""A bundle's stages through a real one-node SLURM cluster: submit.sh -> sbatch -> srun -> torchrun.

Needs a running cluster: `bash .ci/slurm.sh up DIR` (`.ci/run` does it), then OLMO2SPEC_SLURM_DIR=DIR
(and SLURM_CONF=DIR/slurm.conf, the default here). Skipped without OLMO2SPEC_SLURM_DIR, so a plain
`pytest` stays fast; `pytest -m slurm tests/integration` runs only these.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
# the base-model DAG at the same scale: 5 steps per microanneal candidate and per anneal ingredient
DAG_OVERRIDES = [*OVERRIDES, "stages.microanneal.tokens=20K", "stages.anneal.tokens=20K"]
BASE_DAG = ["prepare", "pretrain", "microanneal", "anneal", "soup", "eval-base"]  # then post-training
DAG_TIMEOUT = 1200.0
TRAINING = ("pretrain", "microanneal", "anneal")
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


def _build(out: Path, overrides: list[str] = OVERRIDES) -> Path:
    from olmo2spec.compiler import check
    from olmo2spec.emit.bundle import build_bundle

    build_bundle(check(SPECS / "tiny.toml", overrides), out, "tiny")
    return out


def _records(job_id: str, env: dict[str, str]) -> list[dict[str, str]]:
    """`scontrol show job`, one record per line: a job array gives one per task (or per pending range of tasks)."""
    result = _run(["scontrol", "-o", "show", "job", job_id], env, ROOT, timeout=30)
    assert result.returncode == 0, f"scontrol show job {job_id}: {result.stderr}"
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in result.stdout.splitlines() if line.strip()]


def _job(job_id: str, env: dict[str, str]) -> dict[str, str]:
    """The record of a job that is not an array."""
    return _records(job_id, env)[0]


def _completed(records: list[dict[str, str]]) -> bool:
    return all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records)


def _log(job: dict[str, str]) -> str:
    path = Path(job.get("StdOut", ""))
    return path.read_text(errors="replace") if path.is_file() else f"(no log at {path})"


def _daemon_logs(lines: int = 40) -> str:
    """The tail of slurmctld's and slurmd's logs, for a failure report (jobs are gone from them soon)."""
    parts = []
    for name in ("slurmctld.log", "slurmd.log"):
        path = Path(SLURM_DIR) / name
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path} (last {lines} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


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

    # SLURM holds a requeued job back for about 2 minutes (its EligibleTime): let it start now, but not
    # within the second of the requeue. slurmd revoked the first start's credential then, with a
    # resolution of one second, so a credential issued in that same second is refused as revoked ("Job
    # credential revoked"): the job fails before its script runs.
    job = _wait(job_id, env, until={"PENDING", *FINISHED})
    assert job["JobState"] == "PENDING" and job["Restarts"] == "1", f"not requeued: {job}\n{_log(job)}"
    time.sleep(2)
    hurry = _run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env, ROOT)
    assert hurry.returncode == 0, hurry.stderr
    job = _wait(job_id, env)
    log = _log(job)
    report = (f"job {job_id}: {job['JobState']} exit {job['ExitCode']}, restarts {job.get('Restarts')}, "
              f"reason {job.get('Reason')}; log:\n{log}\n{_daemon_logs()}")
    assert job["JobState"] == "COMPLETED", report
    assert job["ExitCode"] == "0:0", report
    assert job["Restarts"] == "1", report
    assert f"time limit near: checkpointing, then requeueing {job_id}" in log, report
    assert log.count("stop file seen") == 2, report
    assert log.count("resumed after requeue 1") == 2, report
    assert log.count("preflight ok on ") == 2, report  # once per start of the job
    assert not list(checkpoints.glob("pretrain/STOP-*")), report  # the script removed its stop file


FAILING_TRAINER = """import sys
sys.exit("pretrain: failing on purpose")
"""


def test_a_failed_stage_cancels_its_dependents(cluster: dict[str, str], tmp_path: Path):
    """submit.sh passes --kill-on-invalid-dep=yes: when pretrain fails, the jobs waiting on it (afterok) are
    cancelled at once instead of pending forever with DependencyNeverSatisfied."""
    bundle = _build(tmp_path / "tiny")
    (bundle / "stages" / "02-pretrain.py").write_text(FAILING_TRAINER)
    env = _env(CHECKPOINT_ROOT=str(tmp_path / "checkpoints"))
    result = _run(["bash", str(bundle / "launch" / "submit.sh"), "--from", "pretrain", "--until", "anneal"], env,
                  bundle.parent)
    assert result.returncode == 0, result.stderr
    ids = dict(line.split() for line in result.stdout.splitlines()[1:])
    assert list(ids) == ["pretrain", "microanneal", "anneal"], result.stdout
    try:  # no dependencies given: a dependent job counts as ended only once SLURM ends it, not while pending
        ended = _wait_all(ids, {stage: [] for stage in ids}, env)
    finally:
        _run(["scancel", *ids.values()], env, ROOT)
    states = {stage: {r["JobState"] for r in records} for stage, records in ended.items()}
    assert states == {"pretrain": {"FAILED"}, "microanneal": {"CANCELLED"}, "anneal": {"CANCELLED"}}, states


# --- the base-model DAG: launch/submit.sh against launch/local.sh --------------------------------


def _submit_dag(bundle: Path, env: dict[str, str], until: str) -> dict[str, str]:
    result = _run(["bash", str(bundle / "launch" / "submit.sh"), "--until", until], env, bundle.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["stage", "job"], result.stdout
    ids = dict(line.split() for line in lines[1:])
    assert list(ids) == BASE_DAG, f"--until {until} submitted other stages than {BASE_DAG}:\n{result.stdout}"
    assert all(i.isdigit() for i in ids.values()), result.stdout
    return ids


def _wait_all(ids: dict[str, str], depends: dict[str, list[str]], env: dict[str, str]
              ) -> dict[str, list[dict[str, str]]]:
    """Each stage's records as first seen ended. Polling keeps them: without accounting, slurmctld forgets a
    finished job after MinJobAge (300 s), which the early stages would pass while the late ones run. A job
    still pending after a job it waits for failed never starts (SLURM holds it): it counts as ended."""
    ended: dict[str, list[dict[str, str]]] = {}
    deadline = time.monotonic() + DAG_TIMEOUT
    while True:
        for stage, job_id in ids.items():  # in submission order: a stage's dependencies come first
            if stage not in ended:
                records = _records(job_id, env)
                blocked = any(d in ended and not _completed(ended[d]) for d in depends[stage])
                if all(r["JobState"] in FINISHED or (blocked and r["JobState"] == "PENDING") for r in records):
                    ended[stage] = records
        if len(ended) == len(ids):
            return ended
        if time.monotonic() > deadline:
            waiting = {s: [r["JobState"] for r in _records(i, env)] for s, i in ids.items() if s not in ended}
            pytest.fail(f"the DAG did not end in {DAG_TIMEOUT:.0f} s: still {waiting}\n{_dag_report(ended)}")
        time.sleep(1)


def _task(record: dict[str, str]) -> str:
    return f"task {record['ArrayTaskId']} " if record.get("ArrayTaskId") else ""


def _dag_report(ended: dict[str, list[dict[str, str]]], logs_of: set[str] | None = None) -> str:
    """One line per job (and array task); then the logs of the stages in `logs_of`, or of every job not COMPLETED."""
    lines, logs = [], []
    for stage, records in ended.items():
        for r in sorted(records, key=lambda r: r.get("ArrayTaskId", "").zfill(6)):  # array tasks in order
            ok = _completed([r])
            lines.append(f"{stage} {_task(r)}(job {r['JobId']}): {r['JobState']} exit {r['ExitCode']} "
                         f"start {r.get('StartTime')} end {r.get('EndTime')} reason {r.get('Reason')}")
            if (stage in logs_of) if logs_of is not None else not ok:
                logs.append(f"----- {stage} {_task(r)}log {r.get('StdOut')}:\n{_log(r)}")
    return "\n".join([*lines, *logs])


def _metrics(path: Path) -> list[dict[str, object]]:
    """Per-step records without the timings (tokens/s and MFU differ from run to run; nothing else may)."""
    assert path.is_file(), f"no {path}"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "mfu")} for row in rows]


def _eval_numbers(path: Path) -> dict[str, object]:
    """An eval's results.json without its checkpoint path and timings."""
    assert path.is_file(), f"no {path}"
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("checkpoint", "seconds", "task_seconds")}


def _data_copy(raw: Path, dest: Path) -> Path:
    """The raw demo corpus without any token files (another test may have prepared `raw` already)."""
    shutil.copytree(raw, dest, ignore=shutil.ignore_patterns("tokens"))
    return dest


def _token_files(data: Path) -> dict[str, bytes]:
    """What prepare wrote, by path under DATA_ROOT (the per-file reports hold paths and timings: left out)."""
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in sorted((data / "tokens").rglob("*"))
            if p.is_file() and not p.name.endswith(".report.json")}


def test_base_model_dag_matches_local(cluster: dict[str, str], data_root: Path, tmp_path: Path):
    """submit.sh --until eval-base runs the same DAG as local.sh, stage after stage, with the same results.

    Locally: each stage of BASE_DAG with launch/local.sh, into checkpoint root A and data root A. Through
    SLURM: launch/submit.sh --until eval-base into B (its own data root too, so prepare runs again): one job
    per stage, the anneal ingredients as one job array, the soup after all of them (afterok on the array).
    Same seeds, same 2 gloo processes: losses, checkpoints and eval numbers are the same bit for bit.
    """
    from olmo2spec.runtime.checkpoint import latest_complete, load_model_weights

    bundle = _build(tmp_path / "tiny", DAG_OVERRIDES)
    plan = json.loads((bundle / "plan.json").read_text())
    stages = {s["name"]: s for s in plan["stages"]}
    assert [s["name"] for s in plan["stages"]][:len(BASE_DAG)] == BASE_DAG
    runs = {name: [r["name"] for r in stages[name].get("runs", [{"name": name}])] for name in BASE_DAG}
    assert len(runs["anneal"]) == 2 and len(runs["microanneal"]) == 2, runs

    # 1. locally, one stage after another
    local_root, slurm_root = tmp_path / "checkpoints-local", tmp_path / "checkpoints-slurm"
    local_data = _data_copy(data_root, tmp_path / "data-local")
    slurm_data = _data_copy(data_root, tmp_path / "data-slurm")
    local_env = _env(DATA_ROOT=str(local_data), CHECKPOINT_ROOT=str(local_root))
    local_out: dict[str, str] = {}
    for stage in BASE_DAG:
        result = _run(["bash", str(bundle / "launch" / "local.sh"), stage], local_env, tmp_path, timeout=JOB_TIMEOUT)
        local_out[stage] = result.stdout + result.stderr
        assert result.returncode == 0, f"local.sh {stage}: exit {result.returncode}\n{local_out[stage]}"

    # 2. the same DAG through SLURM
    slurm_env = _env(DATA_ROOT=str(slurm_data), CHECKPOINT_ROOT=str(slurm_root))
    ids = _submit_dag(bundle, slurm_env, "eval-base")
    try:
        # what SLURM was told, read while the jobs wait (a satisfied dependency is dropped from the job's record)
        pending = {stage: _records(job_id, slurm_env) for stage, job_id in ids.items()}
        soup, anneal = pending["soup"], pending["anneal"]
        assert len(soup) == 1 and re.fullmatch(rf"afterok:{ids['anneal']}(_\*)?\(unfulfilled\)",
                                                soup[0]["Dependency"]), soup
        assert re.fullmatch(rf"afterok:{ids['soup']}\(unfulfilled\)", pending["eval-base"][0]["Dependency"]), \
            pending["eval-base"]
        for stage in ("microanneal", "anneal"):
            assert pending[stage][0]["Dependency"] == f"afterok:{ids['pretrain']}(unfulfilled)", pending[stage]
        assert [(r["JobState"], r.get("ArrayTaskId")) for r in anneal] == [("PENDING", "0-1")], anneal
        assert [(r["JobState"], r.get("ArrayTaskId")) for r in pending["microanneal"]] == [("PENDING", "0-1")]

        start = time.monotonic()
        ended = _wait_all(ids, {s: stages[s]["depends_on"] for s in BASE_DAG}, slurm_env)
        seconds = time.monotonic() - start
    finally:
        _run(["scancel", *ids.values()], slurm_env, ROOT)  # nothing is left waiting, whatever failed
    report = _dag_report(ended)
    failed = [s for s, rs in ended.items() if not _completed(rs)]
    assert not failed, f"jobs of {failed} did not complete ({seconds:.0f} s):\n{report}"

    # 3. the shape of the DAG as it ran: job arrays for the several-run stages, each job after what it waits for
    for stage in BASE_DAG:
        records = ended[stage]
        if len(runs[stage]) > 1:
            assert sorted(int(r["ArrayTaskId"]) for r in records) == list(range(len(runs[stage]))), report
            assert {r["ArrayJobId"] for r in records} == {ids[stage]}, report
        else:
            assert len(records) == 1 and not records[0].get("ArrayTaskId"), report
        assert all(Path(r["StdOut"]).parent == bundle / "logs" for r in records), report
        for dep in stages[stage]["depends_on"]:
            last_end = max(r["EndTime"] for r in ended[dep])  # ISO 8601 timestamps sort as times
            assert all(r["StartTime"] >= last_end for r in records), f"{stage} started before {dep} ended\n{report}"
    for task, run in enumerate(runs["anneal"]):  # each array task trained its own ingredient
        record = next(r for r in ended["anneal"] if r["ArrayTaskId"] == str(task))
        assert f"anneal: run {run}, steps 0 -> " in _log(record), _dag_report(ended, {"anneal"})

    # 4. the same results
    assert _token_files(slurm_data) == _token_files(local_data), "prepare tokenized differently under SLURM"
    for stage in TRAINING:
        for run in runs[stage]:
            local, slurm = _metrics(local_root / run / "metrics.jsonl"), _metrics(slurm_root / run / "metrics.jsonl")
            assert [r["step"] for r in local] == list(range(1, stages[stage]["steps"] + 1)), local
            if slurm != local:
                first = next(((a, b) for a, b in zip(local, slurm, strict=False) if a != b), None)
                where = f"first at\nlocal {first[0]}\nslurm {first[1]}" if first else \
                    f"in length: {len(local)} steps locally, {len(slurm)} under SLURM"
                pytest.fail(f"{run}: the per-step metrics differ, {where}\n----- local.sh {stage}:\n"
                            f"{local_out[stage]}\n{_dag_report(ended, {stage})}")
    for run in [*runs["pretrain"], *runs["microanneal"], *runs["anneal"], "soup"]:
        local_ckpt, slurm_ckpt = latest_complete(local_root / run), latest_complete(slurm_root / run)
        assert local_ckpt and slurm_ckpt and local_ckpt.name == slurm_ckpt.name, (run, local_ckpt, slurm_ckpt)
        local_w, slurm_w = load_model_weights(local_ckpt), load_model_weights(slurm_ckpt)
        assert sorted(local_w) == sorted(slurm_w), run
        different = [k for k in local_w if not local_w[k].equal(slurm_w[k])]
        assert not different, f"{run}: weights differ in {different}"
    local_eval, slurm_eval = local_root / "eval-base" / "soup", slurm_root / "eval-base" / "soup"
    assert _eval_numbers(slurm_eval / "results.json") == _eval_numbers(local_eval / "results.json"), \
        f"local:\n{local_out['eval-base']}\n{_dag_report(ended, {'eval-base'})}"
    for task in ("demo-math-dev", "demo-math-heldout"):  # the greedy continuations, item by item
        assert (slurm_eval / f"{task}.json").read_bytes() == (local_eval / f"{task}.json").read_bytes(), task


# --- the post-training chain: sft -> dpo -> rlvr -> eval-instruct, export ------------------------

POST_DAG = ["sft", "dpo", "rlvr", "eval-instruct", "export", "reward"]  # tiny writes its reward stage last
# two steps of 8 each for sft, dpo and rlvr: the chain's plumbing, not what it learns (tests/runtime measure that)
POST_OVERRIDES = [*OVERRIDES, "stages.sft.examples=16", "stages.sft.batch_size=8", "stages.dpo.examples=16",
                  "stages.dpo.batch_size=8", "stages.rlvr.examples=16", "stages.rlvr.episodes=16",
                  "stages.rlvr.batch_size=8", "stages.rlvr.samples_per_prompt=4", "stages.rlvr.response_len=16",
                  "stages.reward.examples=16", "stages.reward.batch_size=8"]


# what each post-training kind logs per step besides its loss (issue 13)
METRICS = {"sft": {"loss", "lr", "tokens"}, "dpo": {"loss", "accuracy", "margin", "chosen_reward", "rejected_reward"},
           "reward": {"loss", "accuracy", "margin", "chosen_score", "rejected_score"},
           "rlvr": {"loss", "verifier_reward", "kl", "response_length", "entropy", "eos_rate"}}
EVAL_ITEMS = 4  # per eval file: the eval stage's plumbing (the whole demo suite in chat format is ~1.5 min here)


def _post_data(raw: Path, dest: Path) -> Path:
    """The demo's post-training files, and its eval files cut to their first EVAL_ITEMS lines."""
    shutil.copytree(raw / "post-training", dest / "post-training")
    (dest / "eval").mkdir()
    for path in sorted((raw / "eval").glob("*.jsonl")):
        (dest / "eval" / path.name).write_text("".join(path.read_text().splitlines(keepends=True)[:EVAL_ITEMS]))
    return dest


def _random_start(run_dir: Path) -> None:
    """A final checkpoint of a random model standing in for the soup: post-training starts from it."""
    import warnings

    import torch

    from olmo2spec.compiler import check
    from olmo2spec.runtime.checkpoint import Checkpointer
    from olmo2spec.runtime.model import ModelArgs, Transformer

    plan = check(SPECS / "tiny.toml", POST_OVERRIDES).plan
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    with warnings.catch_warnings():  # DCP without a process group: "assuming ... a single process"
        warnings.simplefilter("ignore")
        Checkpointer(run_dir, keep_last=1, permanent_every=0).save(
            0, model, torch.optim.AdamW(model.parameters()), {"run": run_dir.name}, final=True)


def _runnable_chain(stages: dict[str, dict[str, object]]) -> list[str]:
    """POST_DAG up to its first stage this runtime cannot run: submit.sh skips that one and every one after it."""
    from olmo2spec.kinds import stage_kind

    chain: list[str] = []
    for name in POST_DAG:
        if not stage_kind(str(stages[name]["kind"])).runnable:
            break
        chain.append(name)
    return chain


def test_post_training_chain_through_slurm(cluster: dict[str, str], data_root: Path, tmp_path: Path):
    """submit.sh --from sft submits the post-training chain from a soup the test makes (a random model, final):
    each job waits for the one it starts from, each completes, each run leaves its metrics and a final
    checkpoint, the eval its results and the export a Hugging Face directory. A stage the runtime cannot run
    yet is skipped with the stages after it, and submit.sh says so."""
    from olmo2spec.runtime.checkpoint import final_step, read_marker

    bundle = _build(tmp_path / "tiny", POST_OVERRIDES)
    plan = json.loads((bundle / "plan.json").read_text())
    stages = {s["name"]: s for s in plan["stages"]}
    assert [s["name"] for s in plan["stages"]][-len(POST_DAG):] == POST_DAG
    chain = _runnable_chain(stages)
    assert chain[:2] == ["sft", "dpo"], chain
    checkpoints = tmp_path / "checkpoints"
    _random_start(checkpoints / "soup")
    env = _env(DATA_ROOT=str(_post_data(data_root, tmp_path / "data")), CHECKPOINT_ROOT=str(checkpoints))

    result = _run(["bash", str(bundle / "launch" / "submit.sh"), "--from", "sft"], env, bundle.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["stage", "job"], result.stdout
    ids = dict(line.split() for line in lines[1:])
    assert list(ids) == chain and all(i.isdigit() for i in ids.values()), result.stdout
    for skipped in POST_DAG[len(chain):]:  # not runnable, or starting from one that is not
        assert re.search(rf"^skipping {re.escape(skipped)}: ", result.stderr, re.M), result.stderr
    try:
        pending = {stage: _records(job_id, env) for stage, job_id in ids.items()}
        assert "Dependency" not in pending["sft"][0] or pending["sft"][0]["Dependency"] in ("", "(null)"), \
            pending["sft"]  # --from sft: the soup is taken as done
        for stage in chain[1:]:
            deps = ":".join(ids[d] for d in stages[stage]["depends_on"])
            assert re.fullmatch(rf"afterok:{deps}\(unfulfilled\)", pending[stage][0]["Dependency"]), pending[stage]
        start = time.monotonic()
        ended = _wait_all(ids, {s: [d for d in stages[s]["depends_on"] if d in ids] for s in chain}, env)
        seconds = time.monotonic() - start
    finally:
        _run(["scancel", *ids.values()], env, ROOT)
    report = _dag_report(ended)
    failed = [s for s, rs in ended.items() if not _completed(rs)]
    assert not failed, f"jobs of {failed} did not complete ({seconds:.0f} s):\n{report}"

    # each job after the one it starts from, in the bundle, logging where submit.sh puts logs
    for stage in chain:
        (record,) = ended[stage]
        assert Path(record["StdOut"]).parent == bundle / "logs", report
        for dep in stages[stage]["depends_on"]:
            if dep in ended:
                assert record["StartTime"] >= ended[dep][0]["EndTime"], f"{stage} started before {dep} ended\n{report}"

    # what each stage left: training runs their per-step metrics and a final checkpoint, the eval its results,
    # the export a Hugging Face directory
    for stage in chain:
        kind = stages[stage]["kind"]
        if kind in ("sft", "dpo", "reward", "rlvr"):
            steps = stages[stage]["steps"]
            rows = _metrics(checkpoints / stage / "metrics.jsonl")
            assert [r["step"] for r in rows] == list(range(1, steps + 1)), (stage, rows)
            assert all(METRICS[kind] <= set(r) and isinstance(r["loss"], float) for r in rows), (stage, rows)
            final = final_step(checkpoints / stage)
            marker = read_marker(final)
            assert marker["final"] is True and marker["step"] == steps, (stage, marker)
            start_from = checkpoints / stages[stage]["init_from"]  # the final checkpoint of the stage before
            assert f"starting {stage} from {start_from}/step-" in _log(ended[stage][0]), _dag_report(ended, {stage})
        elif kind == "eval":
            (target,) = stages[stage]["targets"]
            results = json.loads((checkpoints / stage / target / "results.json").read_text())
            # a post-trained model is asked in the chat template, on every task of the suite
            assert results["target"] == target and results["prompt_format"] == "chat", results
            assert set(results["dev"]) == set(stages[stage]["dev_tasks"]), results
            assert set(results["heldout"]) == set(stages[stage]["heldout_tasks"]), results
        elif kind == "export":
            hf = checkpoints / stage / "hf"
            assert (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file(), sorted(hf.iterdir())
            assert list(hf.glob("*.safetensors")), sorted(hf.iterdir())
            assert json.loads((hf / "config.json").read_text())["model_type"] == "olmo2"
