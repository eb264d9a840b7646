"""Repeated n-gram masking per training stage: `ngram_masking` on a stage over [data]'s, resolved into the stage's
plan, and what the loader of its runs does (off: the instances are trained on)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS

from olmo2spec.compiler import check
from olmo2spec.data.loader import loader_for_run
from olmo2spec.data.tokenfile import write_token_file
from olmo2spec.plan.plan import TrainStagePlan, from_json, to_json

ROOT = Path(__file__).resolve().parents[2]


def _stage(overrides: list[str], name: str) -> TrainStagePlan:
    stage = check(SPECS / "tiny.toml", overrides).plan.stage(name)
    assert isinstance(stage, TrainStagePlan)
    return stage


def test_a_stage_inherits_data_ngram_masking_unless_it_says() -> None:
    assert [_stage([], s).ngram_masking for s in ("pretrain", "anneal")] == [True, True]
    off = ["data.ngram_masking=false"]
    assert [_stage(off, s).ngram_masking for s in ("pretrain", "anneal")] == [False, False]
    assert _stage([*off, "stages.anneal.ngram_masking=true"], "anneal").ngram_masking
    assert not _stage(["stages.pretrain.ngram_masking=false"], "pretrain").ngram_masking
    assert _stage(["stages.pretrain.ngram_masking=false"], "anneal").ngram_masking


def test_turning_it_off_warns_where_it_is_turned_off() -> None:
    def w107(overrides: list[str]) -> list[str]:
        return [d.field for d in check(SPECS / "tiny.toml", overrides).warnings if d.code == "W107"]

    assert w107([]) == []
    assert w107(["stages.anneal.ngram_masking=false"]) == ["stages.anneal.ngram_masking"]
    assert w107(["data.ngram_masking=false"]) == ["data.ngram_masking"]
    every_stage_on = [f"stages.{s}.ngram_masking=true" for s in ("pretrain", "microanneal", "anneal")]
    assert w107(["data.ngram_masking=false", *every_stage_on]) == []  # nothing inherits the [data] value


def test_a_plan_written_before_stage_masking_masks_as_data_said() -> None:
    data = json.loads((ROOT / "generated" / "tiny" / "plan.json").read_text())
    data["data"]["ngram_masking"] = False
    for stage in data["stages"]:
        stage.pop("ngram_masking", None)
    plan = from_json(json.dumps(data))
    assert [s.ngram_masking for s in plan.stages if isinstance(s, TrainStagePlan)] == [False, False, False]
    checked = check(SPECS / "tiny.toml", ["stages.anneal.ngram_masking=false"]).plan
    assert from_json(to_json(checked)).stage("anneal").ngram_masking is False  # type: ignore[union-attr]


def _repeated_sources(plan_overrides: list[str], root: Path) -> None:
    """Every source's token files: one token over and over, so that every instance holds a repeated n-gram."""
    plan = check(SPECS / "tiny.toml", plan_overrides).plan
    for source in plan.sources.values():
        for pattern in source.paths:
            path = Path(pattern.replace("${DATA_ROOT}", str(root)).replace("*", "000"))
            write_token_file(path, [np.full(40 * 256, 7)], eos_id=256)


@pytest.mark.parametrize("masking", [True, False])
def test_the_loader_masks_only_where_the_stage_says(tmp_path: Path, masking: bool) -> None:
    overrides = [f"stages.pretrain.ngram_masking={str(masking).lower()}"]
    _repeated_sources(overrides, tmp_path)
    plan = check(SPECS / "tiny.toml", overrides).plan
    stage = plan.stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    batch = loader_for_run(plan, stage, stage.runs[0], data_root=tmp_path).batch(0)
    assert batch.label_mask.all() != masking  # off: every repeated instance keeps its labels and is trained on
    assert batch.masked == (len(batch.tokens) if masking else 0)
