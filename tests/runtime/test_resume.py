"""Training runs resume exactly: SIGKILL mid-run, relaunch, same losses; checkpoints change world size."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from runtime_fixtures import OVERRIDES, SPECS, STEPS, _finish, _losses, _pretrain  # noqa: E402


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, as a node failure would."""
    for victim in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def test_a_killed_run_resumes_with_exactly_the_losses_of_an_uninterrupted_one(bundle, uninterrupted):
    checkpoints = bundle / "ckpt-b"
    process = _pretrain(bundle, checkpoints, 2)
    marker = checkpoints / "pretrain" / "step-0000008" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 8"
        time.sleep(0.05)
    _kill_tree(process.pid)  # torchrun and both workers (torchrun starts them in sessions of their own)
    process.wait()
    assert not (checkpoints / "pretrain" / f"step-{STEPS:07d}").exists()
    log = _finish(_pretrain(bundle, checkpoints, 2))
    assert "resuming pretrain from" in log
    expected, got = _losses(uninterrupted), _losses(checkpoints)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == expected  # bit for bit


def test_a_finished_run_is_not_run_again(bundle, uninterrupted):
    log = _finish(_pretrain(bundle, uninterrupted, 2))
    assert "already complete" in log


def test_a_checkpoint_saved_by_two_processes_loads_in_one(bundle, uninterrupted):
    import torch.distributed as dist

    from olmo2spec.plan.plan import from_json
    from olmo2spec.runtime.checkpoint import Checkpointer, load_model_weights, step_dir
    from olmo2spec.runtime.model import ModelArgs, Transformer
    from olmo2spec.runtime.optim import build_optimizer
    from olmo2spec.runtime.parallelize import apply_parallelism, build_mesh

    plan = from_json((bundle / "bundle" / "plan.json").read_text())
    path = step_dir(uninterrupted / "pretrain", 8)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = Transformer(ModelArgs.from_plan(plan))
        apply_parallelism(model, build_mesh("cpu", 1, 1), bf16=False, activation_checkpointing=False,
                          compile_blocks=False)
        optimizer = build_optimizer(model, plan.optimizer)
        marker = Checkpointer(path.parent, keep_last=10, permanent_every=0).load(path, model, optimizer)
        assert marker["step"] == 8 and marker["world_size"] == 2
        saved = load_model_weights(path)
        for name, param in model.state_dict().items():
            full = param.full_tensor() if hasattr(param, "full_tensor") else param
            assert torch.equal(full, saved[name]), name
        assert len(optimizer.state) == len(list(model.parameters()))  # moments restored for every parameter
    finally:
        dist.destroy_process_group()


def test_a_run_resumes_at_another_world_size(bundle, uninterrupted, tmp_path):
    import shutil

    checkpoints = tmp_path / "ckpt"
    (checkpoints / "pretrain").mkdir(parents=True)
    shutil.copytree(uninterrupted / "pretrain" / "step-0000008", checkpoints / "pretrain" / "step-0000008")
    log = _finish(_pretrain(bundle, checkpoints, 1))
    assert "resuming pretrain from" in log and "(step 8)" in log
    got, expected = _losses(checkpoints), _losses(uninterrupted)
    for step in range(9, STEPS + 1):  # one process sums in another order: equal to rounding
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step


def test_fsdp_units_change_the_collectives_not_the_numbers(bundle, uninterrupted, tmp_path):
    """tiny plans one FSDP unit (CPU); per-block units, as on GPUs, train to the same bits from the same seed."""
    from olmo2spec.compiler import check
    from olmo2spec.emit.bundle import build_bundle

    plan = check(SPECS / "tiny.toml", OVERRIDES)
    assert plan.plan.stage("pretrain").parallel.fsdp_units == "model"
    blocks = check(SPECS / "tiny.toml", [*OVERRIDES, 'stages.pretrain.fsdp_units="block"'])
    assert blocks.plan.stage("pretrain").parallel.fsdp_units == "block"
    build_bundle(blocks, bundle / "bundle-block", "tiny.toml")
    checkpoints = tmp_path / "ckpt"
    _finish(_pretrain(bundle, checkpoints, 2, bundle="bundle-block"))
    for key in ("loss", "grad_norm", "z_loss"):
        assert _losses(checkpoints, key) == _losses(uninterrupted, key), key
