"""The tiny recipe's sft stage, run for real on CPU: a few steps on the demo chat set lower the loss, a run
killed mid-way resumes with exactly the same losses, and bad data or a missing start say so with their exit code."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from posttrain_fixtures import finish, start_run  # noqa: E402

from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.runtime.checkpoint import read_marker, step_dir  # noqa: E402

STAGE = "sft"
STEPS = 6
OVERRIDES = [f"stages.sft.examples={STEPS * 8}", "stages.sft.batch_size=8", "checkpoint.every_steps=2",
             "runtime.log_every=1", "checkpoint.keep_last=10"]


def _start(posttrain_root: Path, checkpoints: Path, data: Path | None = None, start: bool = True,
           nproc: int = 1) -> subprocess.Popen[bytes]:
    return start_run(posttrain_root, STAGE, checkpoints, data=data, start=start, nproc=nproc)


def _losses(checkpoints: Path, key: str = "loss") -> dict[int, float]:
    lines = (checkpoints / "sft" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def uninterrupted(posttrain_root: Path) -> Path:
    checkpoints = posttrain_root / "ckpt-a"
    code, out, err = finish(_start(posttrain_root, checkpoints))
    assert code == 0, out + err
    assert "starting sft from" in out and "(model weights)" in out
    return checkpoints


def test_a_few_steps_lower_the_loss_and_end_in_a_final_checkpoint(uninterrupted: Path) -> None:
    losses = _losses(uninterrupted)
    assert sorted(losses) == list(range(1, STEPS + 1))
    first, last = losses[1] + losses[2], losses[STEPS - 1] + losses[STEPS]
    assert last < first - 0.5, losses
    final = step_dir(uninterrupted / "sft", STEPS)
    assert read_marker(final)["final"] is True


def test_a_killed_run_resumes_with_exactly_the_losses_of_an_uninterrupted_one(
        posttrain_root: Path, uninterrupted: Path):
    checkpoints = posttrain_root / "ckpt-b"
    process = _start(posttrain_root, checkpoints)
    marker = step_dir(checkpoints / "sft", 2) / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 2"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not step_dir(checkpoints / "sft", STEPS).exists()
    code, out, err = finish(_start(posttrain_root, checkpoints))
    assert code == 0, out + err
    assert "resuming sft from" in out
    assert _losses(checkpoints) == _losses(uninterrupted)  # bit for bit
    code, out, _ = finish(_start(posttrain_root, checkpoints))
    assert code == 0 and "already complete" in out


def test_two_processes_train_on_the_same_batches_as_one(posttrain_root: Path, uninterrupted: Path) -> None:
    """Each rank packs its share of a step's conversations; the ranks' losses and gradients add up to the batch's."""
    checkpoints = posttrain_root / "ckpt-2p"
    code, out, err = finish(_start(posttrain_root, checkpoints, nproc=2))
    assert code == 0, out + err
    one, two = _losses(uninterrupted), _losses(checkpoints)
    assert sorted(two) == sorted(one)
    assert all(abs(two[s] - one[s]) < 1e-4 for s in one), (one, two)
    # the gradient before clipping too: FSDP's average over ranks is scaled back to the batch's sum
    norms_one, norms_two = _losses(uninterrupted, "grad_norm"), _losses(checkpoints, "grad_norm")
    assert all(abs(norms_two[s] / norms_one[s] - 1) < 1e-3 for s in one), (norms_one, norms_two)


def test_a_conversation_without_an_answer_stops_the_run_naming_file_and_line(
        posttrain_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    chat = data / "post-training" / "demo-chat" / "train.jsonl"
    chat.parent.mkdir(parents=True)
    lines = (posttrain_root / "data" / "post-training" / "demo-chat" / "train.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
    chat.write_text("\n".join(lines) + "\n")
    code, out, err = finish(_start(posttrain_root, tmp_path / "ckpt", data=data))
    assert code == ExitCode.DATA, out + err
    assert f"{chat}:3: " in err and "no assistant turn" in err and "Traceback" not in err
    assert not (tmp_path / "ckpt" / "sft").exists() or not any((tmp_path / "ckpt" / "sft").glob("step-*"))


def test_without_the_from_stage_checkpoint_the_run_says_which(posttrain_root: Path, tmp_path: Path) -> None:
    code, out, err = finish(_start(posttrain_root, tmp_path / "ckpt", start=False))
    assert code == ExitCode.CHECKPOINT, out + err
    assert "sft starts from soup" in err and "Traceback" not in err
