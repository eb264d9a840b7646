"""TensorBoard and W&B get the records metrics.jsonl gets: read back offline (event files, W&B offline mode)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

from olmo2spec.compiler import check
from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import TrainStagePlan
from olmo2spec.runtime.sinks import TAGS, TensorBoardSink, WandbSink

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _records(steps: range, offset: float = 0.0) -> list[dict[str, float]]:
    return [{"step": s, "tokens": 4096 * s, "lr": 1e-3 * s, "loss": 10.0 - 0.25 * s + offset, "z_loss": 1e-4,
             "grad_norm": 1.5, "tokens_per_s": 2048.0, "mfu": 0.0, "masked_share": 0.0,
             "loss_spike_score": 0.0, "grad_spike_score": 0.0} for s in steps]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _wandb_log(run_dir: Path) -> tuple[Any, list[dict[str, float]]]:
    """The run record and every logged row of the newest offline W&B run, read from its .wandb file.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
    chunks, each with a 7-byte header (crc32, length, kind: 1 full, 2 first, 3 middle, 4 last).
    W&B's service process finishes writing it after `finish()` returns: read until its exit record.
    """
    from wandb.proto import wandb_internal_pb2

    path = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))[-1]
    for _ in range(300):
        data = path.read_bytes()
        block, pos, chunk, run, rows, ended = 32768, 7, b"", None, [], False
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # the block's tail is padding
                pos += block - pos % block
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(chunk)
                chunk, what = b"", record.WhichOneof("record_type")
                if what == "run":
                    run = record.run
                elif what == "history":
                    rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                 for item in record.history.item})
                ended = ended or what == "exit"
        if ended:
            return run, rows
        time.sleep(0.1)
    raise AssertionError(f"{path} has no exit record after 30 s")


def test_tensorboard_event_files_hold_every_record(tmp_path: Path) -> None:
    records = _records(range(1, 7))
    sink = TensorBoardSink(tmp_path, resume_step=0)
    sink.write(records)
    sink.close()
    scalars = _scalars(tmp_path / "tensorboard")
    assert set(scalars) == set(TAGS.values())
    for key, tag in TAGS.items():
        assert scalars[tag] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in records]  # float32 on disk


def test_a_resumed_run_replaces_the_tensorboard_events_past_its_checkpoint(tmp_path: Path) -> None:
    first = TensorBoardSink(tmp_path, resume_step=0)
    first.write(_records(range(1, 7)))  # killed after step 6, last checkpoint at step 4
    first.close()
    again = TensorBoardSink(tmp_path, resume_step=4)
    again.write(_records(range(5, 9), offset=1.0))
    again.close()
    losses = _scalars(tmp_path / "tensorboard")["train/loss"]
    assert [step for step, _ in losses] == list(range(1, 9))
    assert losses[4] == (5, pytest.approx(10.0 - 0.25 * 5 + 1.0))  # the resumed run's value, once


def test_wandb_offline_run_is_named_after_the_recipe_and_resumed_by_its_kept_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _wandb_offline(monkeypatch)
    plan = check(SPECS / "tiny.toml", ['runtime.metrics_sinks=["wandb"]']).plan
    stage = plan.stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    sink = WandbSink(tmp_path, plan, stage, "pretrain")
    sink.write(_records(range(1, 5)))
    sink.close()
    run_id = (tmp_path / "wandb-run-id").read_text().strip()
    run, rows = _wandb_log(tmp_path)
    assert (run.run_id, run.display_name, run.project, run.run_group) == (run_id, "olmo2-tiny-pretrain",
                                                                          "olmo2spec", "olmo2-tiny")
    assert [(row["_step"], row["train/loss"], row["throughput/tokens"]) for row in rows] == [
        (1, 9.75, 4096), (2, 9.5, 8192), (3, 9.25, 12288), (4, 9.0, 16384)]
    resumed = WandbSink(tmp_path, plan, stage, "pretrain")
    assert resumed.run.id == run_id
    resumed.close()


def test_the_trainer_sends_its_records_to_both_sinks(bundle: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import attrs

    from olmo2spec.runtime.bundle import load_run
    from olmo2spec.runtime.trainer import run_train_stage

    _wandb_offline(monkeypatch)
    monkeypatch.setenv("DATA_ROOT", str(bundle / "data"))
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setenv("OLMO2SPEC_DEVICE", "cpu")
    ctx = load_run(bundle / "bundle", "pretrain", None)
    runtime = attrs.evolve(ctx.plan.runtime, metrics_sinks=["tensorboard", "wandb"])
    ctx = attrs.evolve(ctx, plan=attrs.evolve(ctx.plan, runtime=runtime))
    assert run_train_stage(ctx) == 0
    records = [json.loads(line) for line in (tmp_path / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = _scalars(tmp_path / "pretrain" / "tensorboard")["train/loss"]
    assert losses == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in records]
    _run, rows = _wandb_log(tmp_path / "pretrain")
    assert [(row["_step"], row["train/loss"], row["train/grad_norm"]) for row in rows] == [
        (r["step"], r["loss"], r["grad_norm"]) for r in records]


def test_a_sink_without_its_package_stops_the_run_before_training(bundle: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    import attrs

    from olmo2spec.runtime.bundle import load_run
    from olmo2spec.runtime.trainer import run_train_stage

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.setenv("DATA_ROOT", str(bundle / "data"))
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setenv("OLMO2SPEC_DEVICE", "cpu")
    ctx = load_run(bundle / "bundle", "pretrain", None)
    ctx = attrs.evolve(ctx, plan=attrs.evolve(ctx.plan, runtime=attrs.evolve(ctx.plan.runtime,
                                                                              metrics_sinks=["wandb"])))
    assert run_train_stage(ctx) == ExitCode.NOT_RUNNABLE
    assert capsys.readouterr().err == ("error: pretrain: runtime.metrics_sinks names 'wandb', but the 'wandb' "
                                       "package is not installed: pip install wandb (or remove it from "
                                       "metrics_sinks)\n")
    assert not (tmp_path / "pretrain" / "metrics.jsonl").exists()
