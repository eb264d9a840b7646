"""`[[departures]]`: each names a real recipe field, explain shows that field's value beside the paper's,
fragments' departures merge by field, and a plan without any is as before (no `departures` key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from olmo2spec.compiler import check
from olmo2spec.plan.plan import to_json
from olmo2spec.spec.departures import FieldNotFound, resolve_field

ROOT = Path(__file__).resolve().parents[2]
SIZES = ("1b", "7b", "13b", "32b")


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    """specs/ copied beside tmp files, so a recipe there may extend tiny.toml by a relative path."""
    import shutil

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    return tmp_path / "specs"


def test_explain_shows_the_recipes_value_not_a_copy(tiny_copy: Path) -> None:
    spec = tiny_copy / "dep.toml"
    spec.write_text('extends = "tiny.toml"\n\n[[departures]]\nfield = "stages.pretrain.lr.warmup_steps"\n'
                    'paper = "2000 steps"\nsource = "allenai/OLMo configs/x.yaml"\nnote = "why"\n')
    plan = check(spec).plan
    (d,) = plan.departures
    assert (d.field, d.paper, d.source, d.note) == ("stages.pretrain.lr.warmup_steps", "2000 steps",
                                                    "allenai/OLMo configs/x.yaml", "why")
    warmup = check(spec, ["stages.pretrain.lr.warmup_steps=7"]).plan.departures[0].recipe
    assert (d.recipe, warmup) == (f"{plan.stage('pretrain').lr.warmup_steps:,}", "7")  # follows --set too


def test_unset_stage_optimizer_key_shows_the_resolved_value(tiny_copy: Path) -> None:
    spec = tiny_copy / "dep.toml"
    spec.write_text('extends = "tiny.toml"\n\n[[departures]]\nfield = "stages.pretrain.optimizer.eps"\n'
                    'paper = "1e-8"\nsource = "s"\n')
    assert check(spec).plan.departures[0].recipe == f"{check(spec).plan.optimizer.eps:g}"


def test_a_fragments_departure_is_restated_by_field_not_dropped(tiny_copy: Path) -> None:
    (tiny_copy / "frag.toml").write_text('[[departures]]\nfield = "optimizer.eps"\npaper = "a"\nsource = "s"\n\n'
                                         '[[departures]]\nfield = "optimizer.betas"\npaper = "b"\nsource = "s"\n')
    spec = tiny_copy / "dep.toml"
    spec.write_text('extends = "tiny.toml"\ninclude = ["frag.toml"]\n\n[[departures]]\nfield = "optimizer.eps"\n'
                    'paper = "changed"\nsource = "s"\n')
    rows = {d.field: d.paper for d in check(spec).plan.departures}
    assert rows == {"optimizer.eps": "changed", "optimizer.betas": "b"}


def test_plan_without_departures_has_no_key() -> None:
    assert "departures" not in json.loads(to_json(check(ROOT / "specs" / "tiny.toml").plan))


def test_field_resolution_names_stages_with_dots_and_refuses_tables() -> None:
    recipe = check(ROOT / "specs" / "13b.toml").recipe
    assert resolve_field(recipe, "stages.anneal-100b.seeds") == [1110, 2662, 6209]
    assert resolve_field(recipe, "stages.soup.ingredients") == ["anneal-100b", "anneal-300b"]
    with pytest.raises(FieldNotFound, match="is a table"):
        resolve_field(recipe, "stages.pretrain.lr")
    with pytest.raises(FieldNotFound, match="no stage named 'nope'"):
        resolve_field(recipe, "stages.nope.lr")


@pytest.mark.parametrize("size", SIZES)
def test_each_recipes_departures_name_resolvable_fields(plans, size: str) -> None:
    recipe = check(ROOT / "specs" / f"{size}.toml").recipe
    for d in plans[size].departures:
        resolve_field(recipe, d.field)  # raises if it names nothing
        assert d.paper and d.source and d.recipe != "not set"


def test_explain_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from olmo2spec.cli import main

    assert main(["explain", str(ROOT / "specs" / "1b.toml")]) == 0
    out = capsys.readouterr().out
    assert "Departures from the paper" in out and "stages.pretrain.lr.warmup_steps" in out


def test_a_departure_acknowledges_the_stability_lint_on_its_field(tiny_copy: Path) -> None:
    spec = tiny_copy / "dep.toml"
    spec.write_text('extends = "tiny.toml"\n\n[[stages]]\nname = "pretrain"\nngram_masking = false\n')
    assert [d.code for d in check(spec).warnings] == ["W107"]
    spec.write_text(spec.read_text() + '\n[[departures]]\nfield = "stages.pretrain.ngram_masking"\npaper = "true"\n'
                                       'source = "allenai/OLMo-core ...-train.py"\n')
    assert check(spec).warnings == []
