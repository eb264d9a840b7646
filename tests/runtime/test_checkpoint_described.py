"""A checkpoint describes itself: each step carries the plan it was trained with, so a step directory alone is
enough to export, evaluate or soup it; a step saved without one still works when a bundle is given."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402

from olmo2spec.cli import main as cli_main  # noqa: E402
from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.plan.plan import Plan, to_json  # noqa: E402
from olmo2spec.runtime.checkpoint import (  # noqa: E402
    CHECKSUMS,
    PLAN,
    Checkpointer,
    load_model_weights,
    step_plan,
)
from olmo2spec.runtime.evaluate import EvalError, load_model  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.soup import soup  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.distributed is disabled:UserWarning",
                                        "ignore:.*assuming the intent is to:UserWarning")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return check(SPECS / "tiny.toml", SMALL).plan


def save(run_dir: Path, plan: Plan, *, seed: int = 0, carry: bool = True) -> Path:
    """A final step of `plan`'s model as a training run saves it; `carry=False`: as saved before steps had plans."""
    torch.manual_seed(seed)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Checkpointer(run_dir, keep_last=3, permanent_every=0, plan=plan if carry else None).save(
            5, model, torch.optim.AdamW(model.parameters()), {"run": run_dir.name}, final=True)


def test_a_step_carries_its_plan_under_its_checksums(tmp_path, plan):  # type: ignore[no-untyped-def]
    step = save(tmp_path / "run", plan)
    assert (step / PLAN).read_text() == to_json(plan)
    assert PLAN in json.loads((step / CHECKSUMS).read_text())["files"]
    assert to_json(step_plan(step)) == to_json(plan)
    assert step_plan(save(tmp_path / "old", plan, carry=False)) is None


def test_export_hf_from_a_checkpoint_directory_alone(tmp_path, plan, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """CHECKPOINT_ROOT outside any bundle, no --bundle, no OLMO2SPEC_BUNDLE: the step's own plan is used."""
    monkeypatch.delenv("OLMO2SPEC_BUNDLE", raising=False)
    monkeypatch.chdir(tmp_path)
    step = save(tmp_path / "ckpt" / "pretrain", plan)
    assert not any((p / "plan.json").is_file() for p in step.parents)  # no bundle above it
    assert cli_main(["export-hf", str(step.parent), str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        64, 2, plan.tokenizer.embedding_rows)
    from safetensors.torch import load_file

    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert torch.equal(exported["lm_head.weight"], load_model_weights(step)["lm_head.weight"])


def test_export_hf_refuses_a_damaged_plan_and_names_it(tmp_path, plan, capsys):  # type: ignore[no-untyped-def]
    step = save(tmp_path / "run", plan)
    text = (step / PLAN).read_text()
    (step / PLAN).write_text(text.replace('"d_model": 64', '"d_model": 65'))
    assert cli_main(["export-hf", str(step), str(tmp_path / "hf")]) != 0
    err = capsys.readouterr().err
    assert f"checkpoint {step}: {PLAN} does not match its checksum" in err and "--bundle DIR" in err
    assert "Traceback" not in err and not (tmp_path / "hf").exists()


def test_a_step_without_a_plan_needs_a_bundle(tmp_path, plan, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OLMO2SPEC_BUNDLE", raising=False)
    step = save(tmp_path / "run", plan, carry=False)
    assert cli_main(["export-hf", str(step), str(tmp_path / "hf")]) != 0
    err = capsys.readouterr().err
    assert "carries no plan.json" in err and "--bundle DIR" in err
    with pytest.raises(EvalError, match=r"carries no plan\.json .*: give the plan of the bundle it was trained with"):
        load_model(None, step)
    assert load_model(plan, step).args == ModelArgs.from_plan(plan)  # with the plan given, as before


def test_eval_loads_a_checkpoint_by_its_own_plan(tmp_path, plan):  # type: ignore[no-untyped-def]
    step = save(tmp_path / "run", plan)
    model = load_model(None, step.parent)  # a run directory: its final step
    assert model.args == ModelArgs.from_plan(plan)
    assert torch.equal(model.lm_head.weight, load_model_weights(step)["lm_head.weight"])


def test_a_soup_carries_its_ingredients_plan(tmp_path, plan):  # type: ignore[no-untyped-def]
    steps = [save(tmp_path / f"run{i}", plan, seed=i) for i in range(2)]
    out = tmp_path / "soup" / "step-0000000"
    soup(steps, [0.5, 0.5], out, meta={"run": "soup"})
    assert to_json(step_plan(out)) == to_json(plan)
    shutil.rmtree(out.parent)
    old = [save(tmp_path / f"old{i}", plan, seed=i, carry=False) for i in range(2)]
    soup(old, [0.5, 0.5], out, meta={"run": "soup"}, plan=plan)  # the stage passes its bundle's plan
    assert to_json(step_plan(out)) == to_json(plan)
