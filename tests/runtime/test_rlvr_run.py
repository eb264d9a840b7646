"""The tiny recipe's rlvr stage (GRPO), run for real on CPU from a start checkpoint: the metrics of each
step; a SIGKILLed run resumes with exactly the same losses; 2 processes train as 1 does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.data.demo import build_demo_corpus  # noqa: E402
from olmo2spec.emit.bundle import build_bundle  # noqa: E402
from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.runtime.checkpoint import Checkpointer, read_marker, step_dir  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.scalar_model import ScalarModel  # noqa: E402

STEPS, BATCH, GROUP, RESPONSE = 4, 8, 4, 16
OVERRIDES = ["stages.rlvr.examples=16", f"stages.rlvr.episodes={STEPS * BATCH}", f"stages.rlvr.batch_size={BATCH}",
             f"stages.rlvr.samples_per_prompt={GROUP}", f"stages.rlvr.response_len={RESPONSE}",
             "stages.rlvr.update_epochs=2", "stages.rlvr.lr.start=1e-3", "checkpoint.every_steps=2",
             "runtime.log_every=1", "checkpoint.keep_last=10"]
PROMPTS = Path("post-training") / "demo-math-prompts" / "train.jsonl"
PPO = [*OVERRIDES, "stages.rlvr.algorithm=ppo", "stages.rlvr.samples_per_prompt=1", "stages.rlvr.value_coef=0.1",
       "stages.rlvr.kl_estimator=k1", "stages.rlvr.value_from=reward"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Demo data, the bundle, and a start checkpoint standing in for the dpo stage's (a random model, saved final)."""
    root = tmp_path_factory.mktemp("rlvr")
    build_demo_corpus(root / "data")
    result = check(SPECS / "tiny.toml", OVERRIDES)
    build_bundle(result, root / "bundle", "tiny.toml")
    build_bundle(check(SPECS / "tiny.toml", PPO), root / "bundle-ppo", "tiny.toml")
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(result.plan))
    model.init_weights()
    reward = ScalarModel(ModelArgs.from_plan(result.plan))  # standing in for the reward stage's (PPO's value_from)
    reward.init_weights()
    with warnings.catch_warnings():  # DCP without a process group: "assuming ... a single process"
        warnings.simplefilter("ignore")
        Checkpointer(root / "start" / "dpo", keep_last=1, permanent_every=0).save(
            0, model, torch.optim.AdamW(model.parameters()), {"run": "dpo"}, final=True)
        Checkpointer(root / "start" / "reward", keep_last=1, permanent_every=0).save(
            0, reward, torch.optim.AdamW(reward.parameters()), {"run": "reward"}, final=True)
    return root


def _start(root: Path, checkpoints: Path, data: Path | None = None, start: bool = True,
           nproc: int = 1, bundle: str = "bundle") -> subprocess.Popen[bytes]:
    if start and not (checkpoints / "dpo").exists():
        shutil.copytree(root / "start" / "dpo", checkpoints / "dpo")
        shutil.copytree(root / "start" / "reward", checkpoints / "reward")
    env = {**os.environ, "DATA_ROOT": str(data or root / "data"), "CHECKPOINT_ROOT": str(checkpoints),
           "OLMO2SPEC_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(root / bundle), "--stage", "rlvr"]
    else:  # as launch/local.sh starts it
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(next((root / bundle / "stages").glob("*-rlvr.py"))), "--run-name", "rlvr"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out.decode(), err.decode()


def _records(checkpoints: Path) -> dict[int, dict[str, float]]:
    lines = (checkpoints / "rlvr" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


DETERMINED = ("loss", "grad_norm", "reward", "verifier_reward", "kl", "response_length", "entropy", "eos_rate")


def _determined(checkpoints: Path) -> dict[int, tuple[float, ...]]:
    return {step: tuple(r[k] for k in DETERMINED) for step, r in _records(checkpoints).items()}


@pytest.fixture(scope="module")
def uninterrupted(root: Path) -> Path:
    checkpoints = root / "ckpt-a"
    code, out, err = _finish(_start(root, checkpoints))
    assert code == 0, out + err
    assert "reference model:" in out and "starting rlvr from" in out and "(model weights)" in out
    return checkpoints


def test_each_step_logs_the_rollout_and_the_run_ends_final(uninterrupted: Path) -> None:
    records = _records(uninterrupted)
    assert sorted(records) == list(range(1, STEPS + 1))
    first = records[1]
    assert first["kl"] == 0.0  # the policy of the first rollout is the reference
    for r in records.values():
        assert 0 < r["response_length"] <= RESPONSE and 0 <= r["eos_rate"] <= 1 and r["entropy"] > 0
        assert 0 <= r["verifier_reward"] <= 10 and -10 <= r["reward"] <= 10
        assert r["episodes_per_s"] > 0 and r["grad_norm"] >= 0
    assert any(r["kl"] > 0 for r in records.values())  # the policy moved away from the reference
    assert read_marker(step_dir(uninterrupted / "rlvr", STEPS))["final"] is True


def test_a_killed_run_resumes_with_exactly_the_same_steps(root: Path, uninterrupted: Path) -> None:
    checkpoints = root / "ckpt-b"
    process = _start(root, checkpoints)
    marker = step_dir(checkpoints / "rlvr", 2) / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 2"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not step_dir(checkpoints / "rlvr", STEPS).exists()
    code, out, err = _finish(_start(root, checkpoints))
    assert code == 0, out + err
    assert "resuming rlvr from" in out
    assert _determined(checkpoints) == _determined(uninterrupted)  # bit for bit: same samples, same updates
    code, out, _ = _finish(_start(root, checkpoints))
    assert code == 0 and "already complete" in out and "reference" not in out


def test_two_processes_train_on_the_same_episodes_as_one(root: Path, uninterrupted: Path) -> None:
    """Each rank samples and trains its prompts' groups; a row's noise is its global row's, so the samples agree."""
    checkpoints = root / "ckpt-2p"
    code, out, err = _finish(_start(root, checkpoints, nproc=2))
    assert code == 0, out + err
    one, two = _records(uninterrupted), _records(checkpoints)
    assert sorted(two) == sorted(one)
    for key in DETERMINED:
        assert all(abs(two[s][key] - one[s][key]) < 1e-4 * max(1.0, abs(one[s][key])) for s in one), key


def test_a_prompt_without_an_answer_stops_the_run_naming_file_and_line(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / PROMPTS
    path.parent.mkdir(parents=True)
    lines = (root / "data" / PROMPTS).read_text().splitlines()
    record = json.loads(lines[2])
    del record["answer"]
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    code, out, err = _finish(_start(root, tmp_path / "ckpt", data=data))
    assert code == ExitCode.DATA, out + err
    assert f'{path}:3: field "answer": missing' in err and "Traceback" not in err


def test_without_the_from_stage_checkpoint_the_run_says_which(root: Path, tmp_path: Path) -> None:
    code, out, err = _finish(_start(root, tmp_path / "ckpt", start=False))
    assert code == ExitCode.CHECKPOINT, out + err
    assert "rlvr starts from dpo" in err and "Traceback" not in err


# --- PPO ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ppo(root: Path) -> Path:
    checkpoints = root / "ckpt-ppo"
    code, out, err = _finish(_start(root, checkpoints, bundle="bundle-ppo"))
    assert code == 0, out + err
    assert "value model: from the reward model" in out and str(checkpoints / "reward") in out
    assert "view tensor" not in err
    return checkpoints


def test_ppo_trains_a_value_model_whose_loss_falls(ppo: Path) -> None:
    records = _records(ppo)
    assert sorted(records) == list(range(1, STEPS + 1))
    assert records[1]["kl"] == 0.0
    assert records[STEPS]["value_loss"] < records[1]["value_loss"], [r["value_loss"] for r in records.values()]
    assert all(r["value_loss"] > 0 for r in records.values())
    # the value model's checkpoints beside the policy's, at the same steps
    assert read_marker(step_dir(ppo / "rlvr" / "value", STEPS))["final"] is True
    assert step_dir(ppo / "rlvr" / "value", 2).exists()


def test_a_killed_ppo_run_resumes_with_exactly_the_same_steps(root: Path, ppo: Path) -> None:
    checkpoints = root / "ckpt-ppo-b"
    process = _start(root, checkpoints, bundle="bundle-ppo")
    marker = step_dir(checkpoints / "rlvr", 2) / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 2"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    code, out, err = _finish(_start(root, checkpoints, bundle="bundle-ppo"))
    assert code == 0, out + err
    assert "resuming rlvr from" in out and "value model: from" not in out  # the value model of step 2
    one, two = _records(ppo), _records(checkpoints)
    assert {s: (r["value_loss"], *(r[k] for k in DETERMINED)) for s, r in two.items()} == \
        {s: (r["value_loss"], *(r[k] for k in DETERMINED)) for s, r in one.items()}


# --- a chained RLVR stage ----------------------------------------------------------------------------------------

CHAINED = f"""extends = "TINY"

[[stages]]
name = "rlvr-2"
kind = "rlvr"
from = "rlvr"
algorithm = "grpo"
dataset = "demo-math-prompts"
examples = 16
batch_size = {BATCH}
samples_per_prompt = {GROUP}
episodes = {2 * BATCH}
max_seq_len = 128
response_len = {RESPONSE}
update_epochs = 1
kl_beta = 0.05
value_coef = 0.0
verifiers = ["gsm8k"]
lr = {{ schedule = "linear", start = 1e-3, end = 0.0 }}
optimizer = {{ z_loss = 0.0 }}
"""


def test_a_chained_rlvr_stage_starts_from_the_last_and_takes_it_as_its_reference(root: Path, uninterrupted: Path,
                                                                                  tmp_path: Path) -> None:
    """As open-instruct chains RLVR runs (OLMo 2 13B: mixed, then GSM8K, then MATH): the reference is the start."""
    spec = tmp_path / "chained.toml"
    spec.write_text(CHAINED.replace("TINY", os.path.relpath(SPECS / "tiny.toml", tmp_path)))
    build_bundle(check(spec, OVERRIDES), tmp_path / "bundle", "chained.toml")
    checkpoints = tmp_path / "ckpt"
    shutil.copytree(uninterrupted / "rlvr", checkpoints / "rlvr", ignore=shutil.ignore_patterns("metrics.jsonl"))
    env = {**os.environ, "DATA_ROOT": str(root / "data"), "CHECKPOINT_ROOT": str(checkpoints),
           "OLMO2SPEC_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(tmp_path / "bundle"), "--stage", "rlvr-2"]
    code, out, err = _finish(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0, out + err
    start = step_dir(checkpoints / "rlvr", STEPS)
    assert f"reference model: {start}" in out and f"starting rlvr-2 from {start} (model weights)" in out
    lines = (checkpoints / "rlvr-2" / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 2 and first["kl"] == 0.0  # the policy of its first rollout is its reference


def test_two_processes_train_ppo_as_one(root: Path, ppo: Path) -> None:
    """The advantages are whitened over both ranks' tokens, the losses divided by both ranks' token count."""
    checkpoints = root / "ckpt-ppo-2p"
    code, out, err = _finish(_start(root, checkpoints, nproc=2, bundle="bundle-ppo"))
    assert code == 0, out + err
    one, two = _records(ppo), _records(checkpoints)
    assert sorted(two) == sorted(one)
    for key in (*DETERMINED, "value_loss"):
        assert all(abs(two[s][key] - one[s][key]) < 1e-4 * max(1.0, abs(one[s][key])) for s in one), key
