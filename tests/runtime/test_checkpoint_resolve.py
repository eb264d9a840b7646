"""Every consumer finds a run's checkpoint through `checkpoint.resolve`: the same run gives the same message.

One run in three states (no step, an unfinished one, a step with a damaged COMPLETE marker) is
put where each consumer looks for it; each must stop with the text `final_step` (or, for `export-hf` of
a run directory, `newest_step`) gives for that run, and no traceback.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402

from olmo2spec.cli import main as cli_main  # noqa: E402
from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.emit.bundle import build_bundle  # noqa: E402
from olmo2spec.runtime.bundle import load_run  # noqa: E402
from olmo2spec.runtime.checkpoint import COMPLETE, Checkpointer, CheckpointError, final_step, newest_step  # noqa: E402
from olmo2spec.runtime.demo_report import demo_rows  # noqa: E402
from olmo2spec.runtime.evaluate import EvalError, evaluate_checkpoint, run_eval_stage  # noqa: E402
from olmo2spec.runtime.export_stage import run_export_stage  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.soup import run_soup_stage  # noqa: E402
from olmo2spec.runtime.trainer import Trainer, TrainingError  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]
STATES = ["missing", "unfinished", "damaged"]

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.distributed is disabled:UserWarning",
                                        "ignore:.*assuming the intent is to:UserWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A bundle of the small model, and one saved step of it (not final) to copy into runs."""
    root = tmp_path_factory.mktemp("resolve")
    checked = check(SPECS / "tiny.toml", SMALL)
    build_bundle(checked, root / "bundle", "tiny.toml")
    model = Transformer(ModelArgs.from_plan(checked.plan))
    model.init_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Checkpointer(root / "saved", keep_last=5, permanent_every=0).save(
            5, model, torch.optim.AdamW(model.parameters()), {"run": "saved"})
    return root


def make_run(setup: Path, root: Path, run: str, state: str) -> Path:
    """`root/run` in `state`: no step at all, one complete but not final step, or one whose marker is garbage."""
    run_dir = root / run
    if state == "missing":
        run_dir.mkdir()
    else:
        shutil.copytree(setup / "saved", run_dir)
    if state == "damaged":
        (run_dir / "step-0000005" / COMPLETE).write_text("not json\n")
    return run_dir


def expected(run_dir: Path, who: str | None = None) -> str:
    with pytest.raises(CheckpointError) as info:
        final_step(run_dir, who)
    return str(info.value)


def context(setup: Path, root: Path, stage: str, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CHECKPOINT_ROOT", str(root))
    monkeypatch.setenv("DATA_ROOT", str(root))
    monkeypatch.delenv("RANK", raising=False)
    return load_run(setup / "bundle", stage, None)


@pytest.mark.parametrize("state", STATES)
def test_eval_stage(setup, tmp_path, monkeypatch, capsys, state):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "soup", state)  # eval-base's target
    assert run_eval_stage(context(setup, tmp_path, "eval-base", monkeypatch)) != 0
    err = capsys.readouterr().err
    assert f"eval eval-base: soup: {expected(run_dir)}\n" in err and "Traceback" not in err


@pytest.mark.parametrize("state", STATES)
def test_evaluate_checkpoint_of_a_run(setup, tmp_path, state):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "pretrain", state)
    plan = load_run(setup / "bundle", "pretrain", None).plan
    with pytest.raises(EvalError) as info:
        evaluate_checkpoint(plan, run_dir, tmp_path)
    assert str(info.value) == expected(run_dir)


@pytest.mark.parametrize("state", STATES)
def test_soup_stage(setup, tmp_path, monkeypatch, capsys, state):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "anneal-seed42", state)  # the first ingredient
    assert run_soup_stage(context(setup, tmp_path, "soup", monkeypatch)) != 0
    err = capsys.readouterr().err
    assert f"soup soup: {expected(run_dir, 'ingredient anneal-seed42')}\n" in err and "Traceback" not in err


@pytest.mark.parametrize("state", STATES)
def test_export_stage(setup, tmp_path, monkeypatch, capsys, state):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "rlvr", state)  # the export's source
    assert run_export_stage(context(setup, tmp_path, "export", monkeypatch)) != 0
    err = capsys.readouterr().err
    assert f"export export: {expected(run_dir)}\n" in err and "Traceback" not in err


@pytest.mark.parametrize("state", STATES)
def test_trainer_start_from_predecessor(setup, tmp_path, monkeypatch, state):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "pretrain", state)  # what the anneal starts from
    ctx = context(setup, tmp_path, "anneal", monkeypatch)
    trainer = Trainer.__new__(Trainer)  # only what `restore` reads: no process group, model or data
    trainer.ctx, trainer.stage = ctx, ctx.stage
    with pytest.raises(TrainingError) as info:
        trainer.restore()
    assert str(info.value) == f"anneal starts from pretrain: {expected(run_dir)}"


@pytest.mark.parametrize("state", ["missing", "damaged"])  # an unfinished run's newest step is exported
def test_export_hf_cli_of_a_run(setup, tmp_path, capsys, state):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "pretrain", state)
    if state == "missing":
        with pytest.raises(CheckpointError) as info:
            newest_step(run_dir)
        want = str(info.value)
    else:
        want = expected(run_dir)
    capsys.readouterr()
    assert cli_main(["export-hf", str(run_dir), str(tmp_path / "hf"), "--bundle", str(setup / "bundle")]) != 0
    err = capsys.readouterr().err
    assert want in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()


def test_demo_report_of_a_damaged_run(setup, tmp_path):  # type: ignore[no-untyped-def]
    run_dir = make_run(setup, tmp_path, "pretrain", "damaged")
    plan = load_run(setup / "bundle", "pretrain", None).plan
    with pytest.raises(EvalError) as info:
        demo_rows(plan, tmp_path, tmp_path)
    assert str(info.value) == expected(run_dir)
