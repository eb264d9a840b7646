"""The table of stage kinds is the one place a kind is described: every layer's classes agree with it."""

from __future__ import annotations

import importlib.util
import io
import re
import typing
from pathlib import Path

import attrs
import pytest
from rich.console import Console

from olmo2spec import __version__
from olmo2spec.compiler import check
from olmo2spec.emit.bundle import render_bundle
from olmo2spec.explain import render_plan
from olmo2spec.kinds import STAGE_KINDS, kinds_leaving, stage_kind
from olmo2spec.plan.plan import PostTrainStagePlan, StagePlan, TrainStagePlan
from olmo2spec.spec.diagnostics import Severity, SpecError
from olmo2spec.spec.stages import ParallelStage, PostTrainStage, Stage, StageSpec

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "specs" / "tiny.toml"


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
    assert kinds_leaving("reward-model") == ("reward",)  # a scalar model: only rlvr's value_from reads it
    for row in STAGE_KINDS.values():
        assert kinds_leaving(row.starts_from), f"{row.name} can start from no kind"


def test_an_unknown_kind_has_no_row() -> None:
    with pytest.raises(KeyError):
        stage_kind("rm")


# --- a kind the runtime cannot run yet --------------------------------------------------------------------------


def _line_of(path: Path, text: str, after: str) -> int:
    lines = path.read_text().splitlines()
    start = lines.index(after)
    return next(i for i, line in enumerate(lines[start:], start=start + 1) if line == text)


POST_TRAINING = ("sft", "dpo", "reward", "rlvr")


def test_every_post_training_kind_is_runnable() -> None:
    assert all(stage_kind(kind).runnable for kind in POST_TRAINING)
    assert [d for d in check(TINY).warnings if d.code == "W301"] == []
    files = render_bundle(check(TINY), "tiny.toml")
    readme = files["README.md"].decode()
    assert "not yet runnable" not in readme
    assert "| 09 | rlvr | rlvr |" in readme and "09 rlvr           rlvr        <- dpo\n" in readme
    assert "stages/09-rlvr.py" in files


# A kind without a runner, as rlvr was before it ran: its row made runnerless for these tests.
NOT_RUNNABLE = ("rlvr",)


@pytest.fixture
def rlvr_not_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGE_KINDS, "rlvr", attrs.evolve(STAGE_KINDS["rlvr"], runner=None))


@pytest.mark.usefixtures("rlvr_not_runnable")
def test_check_warns_at_the_kind_of_each_stage_that_is_not_runnable() -> None:
    warnings = [d for d in check(TINY).warnings if d.code == "W301"]
    assert [d.field for d in warnings] == [f"stages.{kind}.kind" for kind in NOT_RUNNABLE]
    for d, kind in zip(warnings, NOT_RUNNABLE, strict=True):
        assert d.severity is Severity.WARNING
        assert d.location is not None and d.location.file.endswith("specs/tiny.toml")
        assert d.location.line == _line_of(TINY, f'kind = "{kind}"', f'name = "{kind}"')
        assert f"olmo2spec runtime {__version__} cannot run them" in d.message
        assert f"$CHECKPOINT_ROOT/{kind}" in d.hint


@pytest.mark.usefixtures("rlvr_not_runnable")
def test_strict_makes_a_stage_that_is_not_runnable_an_error() -> None:
    with pytest.raises(SpecError) as caught:
        check(TINY, strict=True)
    assert {d.code for d in caught.value.diagnostics} == {"W301"}


@pytest.mark.usefixtures("rlvr_not_runnable")
def test_the_warning_points_into_the_fragment_that_declares_the_stage() -> None:
    warnings = [d for d in check(ROOT / "specs" / "7b.toml").warnings if d.code == "W301"]
    fragment = ROOT / "specs" / "posttrain" / "tulu3.toml"
    assert [(d.location.file, d.location.line) for d in warnings if d.location] == [
        (str(fragment) if warnings[0].location and warnings[0].location.file.startswith("/") else
         "specs/posttrain/tulu3.toml", _line_of(fragment, f'kind = "{kind}"', f'name = "{kind}"'))
        for kind in NOT_RUNNABLE]


@pytest.mark.usefixtures("rlvr_not_runnable")
def test_explain_marks_the_stages_that_are_not_runnable() -> None:
    out = io.StringIO()
    render_plan(check(TINY).plan, Console(file=out, width=200, highlight=False))
    text = out.getvalue()
    words = " ".join(text.split())  # the caption wraps at the table's width
    for kind in POST_TRAINING:
        marked = re.search(rf"│ {kind} +│ {kind} \(not yet runnable\) +│", text)
        assert bool(marked) == (kind in NOT_RUNNABLE), kind
    assert "│ eval-base     │ eval " in text
    assert (f"not yet runnable: olmo2spec runtime {__version__} cannot run {', '.join(NOT_RUNNABLE)} stages yet; "
            "the bundle's "
            "launchers refuse them by name and a full run skips them and the stages after them") in words


@pytest.mark.usefixtures("rlvr_not_runnable")
def test_the_bundle_has_nothing_that_launches_a_stage_that_is_not_runnable() -> None:
    files = render_bundle(check(TINY), "tiny.toml")
    launchable = {p.split("-", 1)[1].rsplit(".", 1)[0] for p in files if p.startswith(("stages/", "launch/slurm/"))}
    assert launchable == {"prepare", "pretrain", "microanneal", "anneal", "soup", "eval-base", "eval-instruct",
                          "export", *(set(POST_TRAINING) - set(NOT_RUNNABLE))}
    readme = files["README.md"].decode()
    assert "| 07 | sft | sft |" in readme and "07 sft            sft         <- soup\n" in readme
    assert "| 08 | dpo | dpo |" in readme and "08 dpo            dpo         <- sft\n" in readme
    assert "| 09 | rlvr | rlvr (not yet runnable) |" in readme
    assert "09 rlvr           rlvr        <- dpo (not yet runnable)" in readme
