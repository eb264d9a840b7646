"""Checkpoint integrity: checksums written with every step, verified by every load (resume, export, soup, eval).

A damaged step (corrupted bytes, a missing or empty file, garbage `.metadata` or `COMPLETE`) is refused by
every consumer with a message naming the step directory, the file and what to do; never used silently, never
a torch traceback.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402

from olmo2spec import cli  # noqa: E402
from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.emit.bundle import build_bundle  # noqa: E402
from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.plan.plan import Plan  # noqa: E402
from olmo2spec.runtime.checkpoint import (  # noqa: E402
    CHECKSUMS,
    COMPLETE,
    Checkpointer,
    CheckpointError,
    load_model_weights,
    read_marker,
    step_dir,
    verify,
)
from olmo2spec.runtime.evaluate import EvalError, load_model  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.soup import SoupError, soup  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]
SHARD = "__0_0.distcp"

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.distributed is disabled:UserWarning",
                                        "ignore:.*assuming the intent is to:UserWarning")


def make_model(plan: Plan, seed: int) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    return model


def save(run_dir: Path, plan: Plan, step: int, *, seed: int = 0, final: bool = False,
         poison: str | None = None) -> Path:
    """A checkpoint as a training run writes it (model, optimizer, extras); `poison` names a weight set to NaN."""
    model = make_model(plan, seed)
    if poison is not None:
        with torch.no_grad():
            model.get_parameter(poison).view(-1)[3] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Checkpointer(run_dir, keep_last=5, permanent_every=0).save(
            step, model, torch.optim.AdamW(model.parameters()), {"run": run_dir.name}, final=final)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A bundle of the small model and one run of it: steps 4 and 8 (final)."""
    root = tmp_path_factory.mktemp("integrity")
    checked = check(SPECS / "tiny.toml", SMALL)
    build_bundle(checked, root / "bundle", "tiny.toml")
    save(root / "run", checked.plan, 4)
    save(root / "run", checked.plan, 8, final=True)
    save(root / "other", checked.plan, 8, seed=1, final=True)
    return root, checked.plan


@pytest.fixture
def run(setup, tmp_path):  # type: ignore[no-untyped-def]
    """A fresh copy of the run (steps 4 and 8) to damage."""
    root, _ = setup
    shutil.copytree(root / "run", tmp_path / "run")
    return tmp_path / "run"


# --- what every consumer does with a checkpoint; each returns the error message it gave -------------------------


def resume(path: Path, plan: Plan, tmp: Path, capsys) -> str:  # type: ignore[no-untyped-def]
    model = make_model(plan, 5)
    with pytest.raises(CheckpointError) as info:
        Checkpointer(path.parent, keep_last=5, permanent_every=0).load(path, model, torch.optim.AdamW(
            model.parameters()))
    return str(info.value)


def export(path: Path, plan: Plan, tmp: Path, capsys) -> str:  # type: ignore[no-untyped-def]
    code = cli.main(["export-hf", str(path), str(tmp / "hf"), "--bundle", str(BUNDLE[0])])
    err = capsys.readouterr().err
    assert code == ExitCode.CHECKPOINT, err
    assert not (tmp / "hf").exists()
    return err


def soup_with(path: Path, plan: Plan, tmp: Path, capsys) -> str:  # type: ignore[no-untyped-def]
    out = tmp / "soup" / "step-0000000"
    with pytest.raises(SoupError) as info:
        soup([BUNDLE[1], path], [0.5, 0.5], out, meta={}, names=["other", "run"])
    assert not (out / COMPLETE).exists()
    return str(info.value)


def evaluate(path: Path, plan: Plan, tmp: Path, capsys) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(EvalError) as info:
        load_model(plan, path)
    return str(info.value)


CONSUMERS: dict[str, Callable[..., str]] = {"resume": resume, "export": export, "soup": soup_with, "eval": evaluate}
BUNDLE: list[Path] = []  # the bundle, the other run's final step: set by the `consumers` fixture


@pytest.fixture
def consumers(setup):  # type: ignore[no-untyped-def]
    root, _ = setup
    BUNDLE[:] = [root / "bundle", step_dir(root / "other", 8)]
    return CONSUMERS


def assert_clear(message: str, path: Path, file: str) -> None:
    """Names the step directory and the file, says what to do, and is no traceback."""
    assert str(path) in message and file in message, message
    assert "delete" in message and "step-0000004" in message, message  # resume from the previous complete step
    assert "Traceback" not in message and "internal error" not in message, message


# --- class 1: corrupted bytes are caught by checksums ------------------------------------------------------------


@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_corrupted_bytes_in_a_complete_step_are_refused_by_every_load(run, setup, consumers, consumer, tmp_path,
                                                                      capsys):
    _, plan = setup
    path = step_dir(run, 8)
    shard = path / SHARD
    data = bytearray(shard.read_bytes())
    middle = len(data) // 3  # inside the model's tensors: DCP's own reads cannot notice
    data[middle:middle + 64] = bytes(range(64))
    shard.write_bytes(bytes(data))
    message = consumers[consumer](path, plan, tmp_path, capsys)
    assert_clear(message, path, SHARD)
    assert "checksum" in message


def test_every_complete_step_has_checksums_of_every_rank_s_files(uninterrupted):
    """A 2-process run with async saves: every rank's shards and extras, .metadata and the plan are in the step's
    CHECKSUMS."""
    run_dir = uninterrupted / "pretrain"
    steps = sorted(p for p in run_dir.glob("step-*") if (p / COMPLETE).is_file())
    assert [p.name for p in steps] == ["step-0000004", "step-0000008", "step-0000012", "step-0000016"]
    for path in steps:
        listed = json.loads((path / CHECKSUMS).read_text())["files"]
        on_disk = {p.name for p in path.iterdir() if p.name not in (COMPLETE, CHECKSUMS)}
        assert set(listed) == on_disk == {".metadata", "__0_0.distcp", "__1_0.distcp", "extra-rank0.pt",
                                          "extra-rank1.pt", "plan.json"}
        assert read_marker(path)["checksums"]
        verify(path)


# --- class 2: missing, empty or garbage files --------------------------------------------------------------------


def _missing_shard(path: Path) -> str:
    (path / SHARD).unlink()
    return SHARD


def _empty_shard(path: Path) -> str:
    (path / SHARD).write_bytes(b"")
    return SHARD


def _garbage_metadata(path: Path) -> str:
    (path / ".metadata").write_bytes(b"\x80\x04garbage" * 10)
    return ".metadata"


def _garbage_complete(path: Path) -> str:
    (path / COMPLETE).write_text("{not json")
    return COMPLETE


def _complete_not_utf8(path: Path) -> str:
    (path / COMPLETE).write_bytes(b"\xff\xfe{garbage")
    return COMPLETE


def _empty_complete(path: Path) -> str:
    (path / COMPLETE).write_text("")
    return COMPLETE


def _missing_checksums(path: Path) -> str:
    (path / CHECKSUMS).unlink()
    return CHECKSUMS


def _complete_without_a_step(path: Path) -> str:
    marker = read_marker(path)
    marker["step"] = "eight"
    (path / COMPLETE).write_text(json.dumps(marker))
    return COMPLETE


def _checksums_of_another_shape(path: Path) -> str:
    """Garbage that its marker vouches for (both rewritten): still no traceback."""
    text = '{"files": ["__0_0.distcp"]}'
    (path / CHECKSUMS).write_text(text)
    marker = read_marker(path)
    marker["checksums"] = hashlib.sha256(text.encode()).hexdigest()
    (path / COMPLETE).write_text(json.dumps(marker))
    return CHECKSUMS


DAMAGE = {f.__name__.lstrip("_"): f for f in (_missing_shard, _empty_shard, _garbage_metadata, _garbage_complete,
                                              _complete_not_utf8, _empty_complete, _missing_checksums,
                                              _complete_without_a_step, _checksums_of_another_shape)}


@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_missing_empty_or_garbage_file_gives_a_clear_error(run, setup, consumers, consumer, damage, tmp_path,
                                                             capsys):
    _, plan = setup
    path = step_dir(run, 8)
    file = DAMAGE[damage](path)
    message = consumers[consumer](path, plan, tmp_path, capsys)
    assert_clear(message, path, file)


def unseal(path: Path) -> None:
    """Make a step look saved before checksums existed: no CHECKSUMS.json, none recorded in COMPLETE."""
    (path / CHECKSUMS).unlink()
    marker = read_marker(path)
    del marker["checksums"]
    (path / COMPLETE).write_text(json.dumps(marker))


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(run, setup, capsys):
    """Steps written before checksums existed stay usable (their runs are not stranded), with a warning."""
    _, plan = setup
    path = step_dir(run, 8)
    unseal(path)
    assert set(load_model_weights(path)) == set(make_model(plan, 0).state_dict())
    assert f"{path} has no {CHECKSUMS}" in capsys.readouterr().err


@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("damage", ["missing_shard", "empty_shard", "garbage_metadata"])
def test_a_step_from_before_checksums_with_a_missing_empty_or_garbage_file_gives_a_clear_error(
        run, setup, consumers, consumer, damage, tmp_path, capsys):  # type: ignore[no-untyped-def]
    """Without checksums the sizes in `.metadata` still name a missing, empty or truncated file."""
    _, plan = setup
    path = step_dir(run, 8)
    unseal(path)
    file = DAMAGE[damage](path)
    message = consumers[consumer](path, plan, tmp_path, capsys)
    assert_clear(message, path, file)


def test_a_run_whose_latest_step_is_damaged_stops_and_says_which_step_to_resume_from(bundle, uninterrupted,
                                                                                       tmp_path):
    from runtime_fixtures import _env

    checkpoints = tmp_path / "ckpt"
    for step in (4, 8):
        shutil.copytree(step_dir(uninterrupted / "pretrain", step), step_dir(checkpoints / "pretrain", step))
    damaged = step_dir(checkpoints / "pretrain", 8)
    (damaged / "__1_0.distcp").write_bytes(b"")
    # the stage's program as one process (torchrun, around it, adds a traceback of its own to any failed stage)
    entry = bundle / "bundle" / "stages" / "02-pretrain.py"
    result = subprocess.run([sys.executable, str(entry), "--run-name", "pretrain"], env=_env(bundle, checkpoints),
                            capture_output=True, text=True, timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == ExitCode.CHECKPOINT, text
    assert_clear(text, damaged, "__1_0.distcp")
    assert (damaged / "__0_0.distcp").is_file()  # nothing deleted for the user


# --- defence in depth: non-finite weights ------------------------------------------------------------------------


def test_non_finite_weights_are_never_souped_or_exported(setup, tmp_path):
    root, plan = setup
    poisoned = save(tmp_path / "nan", plan, 8, final=True, poison="layers.1.mlp.down_proj.weight")
    out = tmp_path / "soup" / "step-0000000"
    with pytest.raises(SoupError, match=r"layers\.1\.mlp\.down_proj\.weight.*not finite"):
        soup([step_dir(root / "other", 8), poisoned], [0.5, 0.5], out, meta={})
    assert not (out / COMPLETE).exists()
    code = cli.main(["export-hf", str(poisoned), str(tmp_path / "hf"), "--bundle", str(root / "bundle")])
    assert code == ExitCode.CHECKPOINT and not (tmp_path / "hf").exists()


# --- the stages that read another run's final checkpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def stage_runs(setup):  # type: ignore[no-untyped-def]
    """Steps 4 and 8 (final) of the runs the soup, eval-base and export stages read."""
    root, plan = setup
    for run in ("anneal-seed42", "anneal-seed42069", "anneal-seed666", "soup", "rlvr"):
        save(root / "stage-runs" / run, plan, 4)
        save(root / "stage-runs" / run, plan, 8, final=True)
    return root / "stage-runs"


@pytest.mark.parametrize("damage", ["corrupted_shard", "garbage_complete"])
@pytest.mark.parametrize(("stage", "source"), [("soup", "anneal-seed42069"), ("eval-base", "soup"), ("export", "rlvr"),
                                               ("demo-report", "anneal-seed42")])
def test_a_stage_reading_a_damaged_checkpoint_exits_with_the_message(setup, stage_runs, tmp_path, monkeypatch, capsys,
                                                                     stage, source, damage):
    from olmo2spec.runtime.main import main

    root, _ = setup
    tmp_path = tmp_path / "ckpt"
    shutil.copytree(stage_runs, tmp_path)
    path = step_dir(tmp_path / source, 8)
    if damage == "corrupted_shard":
        with (path / SHARD).open("r+b") as f:
            f.seek((path / SHARD).stat().st_size // 3)
            f.write(bytes(range(64)))
        file = SHARD
    else:
        file = _garbage_complete(path)
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    monkeypatch.delenv("RANK", raising=False)
    if stage == "demo-report":  # `olmo2spec demo-report` evaluates every model of the demo's table
        assert cli.main(["demo-report", str(root / "bundle")]) == ExitCode.CHECKPOINT
    else:
        assert main(["run", "--bundle", str(root / "bundle"), "--stage", stage]) == ExitCode.CHECKPOINT
    assert_clear(capsys.readouterr().err, path, file)
    assert not (tmp_path / stage / "hf").exists() and not (tmp_path / "soup" / "step-0000000").exists()
