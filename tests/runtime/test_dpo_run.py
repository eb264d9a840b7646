"""The tiny recipe's dpo stage, run for real on CPU: a few steps from a start checkpoint raise the
preference accuracy and lower the loss; the reference log-probs are computed once and reused on a
restart (a SIGKILLed run resumes with exactly the same losses), and computed again when the dataset changes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from posttrain_fixtures import finish, start_run  # noqa: E402

from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.runtime.checkpoint import read_marker, step_dir  # noqa: E402

STAGE = "dpo"
PAIRS, EPOCHS, BATCH = 16, 4, 8
STEPS = PAIRS * EPOCHS // BATCH
OVERRIDES = [f"stages.dpo.examples={PAIRS}", f"stages.dpo.epochs={EPOCHS}", f"stages.dpo.batch_size={BATCH}",
             "stages.dpo.lr.start=1e-3", "checkpoint.every_steps=2", "runtime.log_every=1", "checkpoint.keep_last=10"]
PREFERENCES = Path("post-training") / "demo-preferences" / "train.jsonl"


def _start(posttrain_root: Path, checkpoints: Path, data: Path | None = None, start: bool = True,
           nproc: int = 1) -> subprocess.Popen[bytes]:
    return start_run(posttrain_root, STAGE, checkpoints, data=data, start=start, nproc=nproc)


def _records(checkpoints: Path) -> dict[int, dict[str, float]]:
    lines = (checkpoints / "dpo" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def _losses(checkpoints: Path) -> dict[int, float]:
    return {step: r["loss"] for step, r in _records(checkpoints).items()}


@pytest.fixture(scope="module")
def uninterrupted(posttrain_root: Path) -> Path:
    checkpoints = posttrain_root / "ckpt-a"
    code, out, err = finish(_start(posttrain_root, checkpoints))
    assert code == 0, out + err
    assert "computing the reference log-probs of 16 pairs" in out
    assert "starting dpo from" in out and "(model weights)" in out
    return checkpoints


def test_a_few_steps_raise_the_preference_accuracy_and_lower_the_loss(uninterrupted: Path) -> None:
    records = _records(uninterrupted)
    assert sorted(records) == list(range(1, STEPS + 1))
    first, last = records[1], records[STEPS]
    assert abs(first["loss"] - 0.6931) < 1e-3 and abs(first["margin"]) < 1e-3  # the policy is the reference
    assert last["loss"] < 0.4 and last["accuracy"] >= 0.875 and last["margin"] > 0.5, last
    assert last["margin"] == pytest.approx(last["chosen_reward"] - last["rejected_reward"])
    assert read_marker(step_dir(uninterrupted / "dpo", STEPS))["final"] is True


def test_a_killed_run_resumes_with_exactly_the_losses_and_reuses_the_reference(
        posttrain_root: Path, uninterrupted: Path):
    checkpoints = posttrain_root / "ckpt-b"
    process = _start(posttrain_root, checkpoints)
    marker = step_dir(checkpoints / "dpo", 2) / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 2"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not step_dir(checkpoints / "dpo", STEPS).exists()
    code, out, err = finish(_start(posttrain_root, checkpoints))
    assert code == 0, out + err
    assert "reusing the reference log-probs of 16 pairs" in out and "computing" not in out
    assert "resuming dpo from" in out
    assert _losses(checkpoints) == _losses(uninterrupted)  # bit for bit
    code, out, _ = finish(_start(posttrain_root, checkpoints))
    assert code == 0 and "already complete" in out and "reference" not in out


def test_two_processes_train_on_the_same_pairs_as_one(posttrain_root: Path, uninterrupted: Path) -> None:
    """Each rank computes its share of the reference log-probs and takes its share of a step's pairs."""
    checkpoints = posttrain_root / "ckpt-2p"
    code, out, err = finish(_start(posttrain_root, checkpoints, nproc=2))
    assert code == 0, out + err
    one, two = _records(uninterrupted), _records(checkpoints)
    assert sorted(two) == sorted(one)
    for key in ("loss", "grad_norm", "margin"):
        assert all(abs(two[s][key] - one[s][key]) < 1e-4 * max(1.0, abs(one[s][key])) for s in one), key
    assert [two[s]["accuracy"] for s in two] == [one[s]["accuracy"] for s in one]
    cached = [np.load(p)["logps"] for d in (uninterrupted, checkpoints) for p in (d / "dpo").glob("ref*.npz")]
    assert len(cached) == 2 and np.allclose(cached[0], cached[1], atol=1e-5)


def test_a_changed_dataset_computes_the_reference_again(
        posttrain_root: Path, uninterrupted: Path, tmp_path: Path) -> None:
    """A line past the pairs the stage reads changes: the same training, but the file's digest is the key's."""
    data = tmp_path / "data"
    shutil.copytree(posttrain_root / "data" / "post-training", data / "post-training")
    lines = (data / PREFERENCES).read_text().splitlines()
    lines[-1] = lines[-2]
    (data / PREFERENCES).write_text("\n".join(lines) + "\n")
    checkpoints = tmp_path / "ckpt"
    (checkpoints / "dpo").mkdir(parents=True)
    for cached in (uninterrupted / "dpo").glob("reference-logps-*.npz"):
        shutil.copy(cached, checkpoints / "dpo")
    code, out, err = finish(_start(posttrain_root, checkpoints, data=data))
    assert code == 0, out + err
    assert "computing the reference log-probs" in out and "reusing" not in out
    assert len(list((checkpoints / "dpo").glob("reference-logps-*.npz"))) == 1  # the stale one replaced
    assert _losses(checkpoints) == _losses(uninterrupted)


def test_a_pair_without_a_rejected_answer_stops_the_run_naming_file_and_line(
        posttrain_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / PREFERENCES
    path.parent.mkdir(parents=True)
    lines = (posttrain_root / "data" / PREFERENCES).read_text().splitlines()
    record = json.loads(lines[2])
    del record["rejected"]
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    code, out, err = finish(_start(posttrain_root, tmp_path / "ckpt", data=data))
    assert code == ExitCode.DATA, out + err
    assert f'{path}:3: field "rejected": missing' in err and "Traceback" not in err
    assert not any((tmp_path / "ckpt" / "dpo").glob("*")) if (tmp_path / "ckpt" / "dpo").exists() else True


def test_without_the_from_stage_checkpoint_the_run_says_which(posttrain_root: Path, tmp_path: Path) -> None:
    code, out, err = finish(_start(posttrain_root, tmp_path / "ckpt", start=False))
    assert code == ExitCode.CHECKPOINT, out + err
    assert "dpo starts from sft" in err and "Traceback" not in err
