"""The table of stage kinds is the one place a kind is described: every layer's classes agree with it."""

from __future__ import annotations

import importlib.util
import typing

import pytest

from olmo2spec.kinds import STAGE_KINDS, kinds_leaving, stage_kind
from olmo2spec.plan.plan import PostTrainStagePlan, StagePlan, TrainStagePlan
from olmo2spec.spec.stages import ParallelStage, PostTrainStage, Stage, StageSpec


def _kind_literal(cls: type) -> str:
    (name,) = typing.get_args(typing.get_type_hints(cls)["kind"])
    return str(name)


def test_every_spec_class_has_exactly_one_row() -> None:
    classes = typing.get_args(Stage)
    assert sorted(_kind_literal(c) for c in classes) == sorted(STAGE_KINDS)
    assert len({row.spec for row in STAGE_KINDS.values()}) == len(STAGE_KINDS)
    assert {row.spec for row in STAGE_KINDS.values()} == set(classes)


@pytest.mark.parametrize("name", list(STAGE_KINDS))
def test_a_row_names_its_kind_as_its_spec_class_does(name: str) -> None:
    row = stage_kind(name)
    assert row.name == name == _kind_literal(row.spec)
    assert issubclass(row.spec, StageSpec)


def test_every_plan_class_is_named_by_a_row() -> None:
    assert {row.plan for row in STAGE_KINDS.values()} == set(typing.get_args(StagePlan))


@pytest.mark.parametrize("name", list(STAGE_KINDS))
def test_a_row_agrees_with_its_classes(name: str) -> None:
    row = stage_kind(name)
    trains = issubclass(row.spec, ParallelStage)
    assert row.distributed == trains  # data-parallel training is what torchrun is for
    assert issubclass(row.plan, (TrainStagePlan, PostTrainStagePlan)) == trains
    assert row.chat_model == issubclass(row.spec, PostTrainStage)


@pytest.mark.parametrize("name", list(STAGE_KINDS))
def test_every_runner_names_a_runtime_module_that_exists(name: str) -> None:
    """Found without importing it (the runtime imports torch); tests/runtime/test_kinds_runners.py imports them."""
    row = stage_kind(name)
    if row.runner is None:
        assert not row.runnable
        with pytest.raises(LookupError):
            row.load_runner()
        return
    module, _, function = row.runner.partition(":")
    assert module.startswith("olmo2spec.runtime.") and function
    assert importlib.util.find_spec(module) is not None


def test_a_stage_can_start_from_what_its_kind_starts_from() -> None:
    assert kinds_leaving("checkpoint") == ("pretrain", "anneal", "microanneal", "soup", "sft", "dpo", "rlvr")
    assert kinds_leaving("data") == ("prepare",)
    for row in STAGE_KINDS.values():
        assert kinds_leaving(row.starts_from), f"{row.name} can start from no kind"


def test_an_unknown_kind_has_no_row() -> None:
    with pytest.raises(KeyError):
        stage_kind("rm")
