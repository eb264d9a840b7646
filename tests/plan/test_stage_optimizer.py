"""A training stage's `optimizer = { ... }` over the recipe's [optimizer]: resolved into the stage's plan, and
what the runtime builds the stage's AdamW from."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from conftest import SPECS

from olmo2spec.compiler import check
from olmo2spec.plan.plan import from_json, to_json
from olmo2spec.spec.training import OptimizerSpec

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]

from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.optim import build_optimizer  # noqa: E402


def test_a_partial_override_keeps_the_rest_of_the_recipes_optimizer() -> None:
    plan = check(SPECS / "tiny.toml", ["stages.pretrain.optimizer={weight_decay = 0.05, grad_clip = 0.5}"]).plan
    recipe = plan.optimizer
    pretrain = plan.stage("pretrain").optimizer  # type: ignore[union-attr]
    assert pretrain == attrs.evolve(recipe, weight_decay=0.05, grad_clip=0.5)
    assert plan.stage("anneal").optimizer == recipe  # type: ignore[union-attr]  # a stage without one: the recipe's


def test_tiny_post_training_stages_say_what_open_instruct_used() -> None:
    plan = check(SPECS / "tiny.toml").plan
    for name in ("sft", "dpo"):
        assert plan.stage(name).optimizer == attrs.evolve(  # type: ignore[union-attr]
            plan.optimizer, weight_decay=0.0, betas=[0.9, 0.999], z_loss=0.0)
    rlvr = plan.stage("rlvr").optimizer  # type: ignore[union-attr]
    assert (rlvr.weight_decay, rlvr.betas, rlvr.decay_embeddings, rlvr.z_loss) == (0.01, [0.9, 0.999], True, 0.0)
    assert plan.stage("pretrain").optimizer == plan.optimizer  # type: ignore[union-attr]
    assert plan.optimizer.weight_decay == 0.1


@pytest.mark.parametrize("size", ["1b", "7b", "13b", "32b"])
def test_paper_recipes_post_train_without_weight_decay(size: str) -> None:
    plan = check(SPECS / f"{size}.toml").plan
    for stage in plan.stages:
        if stage.kind in ("sft", "dpo"):
            assert stage.optimizer.weight_decay == 0.0 and stage.optimizer.betas == [0.9, 0.999]  # type: ignore[union-attr]
        if stage.kind in ("pretrain", "anneal"):
            assert stage.optimizer == plan.optimizer  # type: ignore[union-attr]


def test_the_stage_optimizer_survives_plan_json() -> None:
    plan = check(SPECS / "tiny.toml").plan
    again = from_json(to_json(plan))
    assert again.stage("sft").optimizer == plan.stage("sft").optimizer  # type: ignore[union-attr]
    assert isinstance(again.stage("sft").optimizer, OptimizerSpec)  # type: ignore[union-attr]


def _settings(optimizer: torch.optim.Optimizer) -> list[tuple[float, tuple[float, float], int]]:
    return [(g["weight_decay"], g["betas"], len(g["params"])) for g in optimizer.param_groups]


def test_the_runtime_builds_each_stages_optimizer_from_its_plan() -> None:
    plan = check(SPECS / "tiny.toml").plan
    model = Transformer(ModelArgs.from_plan(plan))
    sft = _settings(build_optimizer(model, plan.stage("sft").optimizer))  # type: ignore[union-attr]
    pretrain = _settings(build_optimizer(model, plan.stage("pretrain").optimizer))  # type: ignore[union-attr]
    assert [(wd, betas) for wd, betas, _ in sft] == [(0.0, (0.9, 0.999)), (0.0, (0.9, 0.999))]
    assert [(wd, betas) for wd, betas, _ in pretrain] == [(0.1, (0.9, 0.95)), (0.0, (0.9, 0.95))]
    rlvr = _settings(build_optimizer(model, plan.stage("rlvr").optimizer))  # type: ignore[union-attr]
    assert rlvr[0][0] == 0.01 and rlvr[1][2] == 0  # decay on every weight, the embedding too


def test_explain_shows_what_each_stage_changes() -> None:
    from rich.console import Console

    from olmo2spec.explain import optimizer_table

    console = Console(width=200, record=True)
    console.print(optimizer_table(check(SPECS / "tiny.toml").plan))
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in console.export_text().splitlines()
            if line.count("│") == 3}
    assert rows["pretrain"] == "as [optimizer]"
    assert rows["sft"] == "betas (0.9, 0.999), weight decay 0, z-loss 0"
    assert "weight decay 0.1" in rows["[optimizer]"]


def test_a_plan_written_before_stage_optimizers_trains_every_stage_with_the_recipes() -> None:
    import json

    data = json.loads((ROOT / "generated" / "tiny" / "plan.json").read_text())
    for stage in data["stages"]:
        stage.pop("optimizer", None)
    plan = from_json(json.dumps(data))
    for name in ("pretrain", "anneal", "sft", "dpo"):
        assert plan.stage(name).optimizer == plan.optimizer  # type: ignore[union-attr]


def test_no_runner_trains_with_the_recipes_optimizer_instead_of_its_stages() -> None:
    """Each stage's settings are its plan's `optimizer`; `plan.optimizer` is the recipe's, for the record only."""
    readers = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "olmo2spec" / "runtime").rglob("*.py"))
               if re.search(r"plan\.optimizer\.", p.read_text())]
    assert readers == []
