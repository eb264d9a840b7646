"""A soup names the runs it averages: `STAGE` takes every run, `STAGE@seed:N` one run of an anneal."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from olmo2spec.compiler import check
from olmo2spec.explain import render_plan
from olmo2spec.plan.plan import SoupStagePlan, TrainStagePlan

SPECS = Path(__file__).resolve().parents[2] / "specs"
THREE = "stages.anneal.seeds=[42, 42069, 666]"


def _plan(*overrides: str):  # type: ignore[no-untyped-def]
    checked = check(SPECS / "tiny.toml", [THREE, *overrides])
    assert checked.plan is not None, checked.report
    return checked.plan


def test_a_stage_alone_still_takes_every_run():
    soup = _plan().stage("soup")
    assert isinstance(soup, SoupStagePlan)
    assert soup.ingredients == ["anneal-seed42", "anneal-seed42069", "anneal-seed666"]


def test_a_seed_selects_one_run_and_weights_count_the_selected_runs():
    plan = _plan('stages.soup.ingredients=["anneal@seed:666", "anneal@seed:42"]', "stages.soup.weights=[1, 3]")
    soup = plan.stage("soup")
    assert isinstance(soup, SoupStagePlan)
    assert soup.ingredients == ["anneal-seed666", "anneal-seed42"] and soup.weights == [0.25, 0.75]
    assert soup.depends_on == ["anneal"]  # the job still waits for the anneal's array
    text = io.StringIO()
    render_plan(plan, Console(file=text, width=200))
    assert "Soups" in text.getvalue() and "anneal-seed666 │   0.25" in text.getvalue()


def test_one_run_of_an_anneal_and_every_run_of_another_stage():
    """13B's shape: runs of one anneal next to the single run of another (here the microanneal's candidates)."""
    soup = _plan('stages.soup.ingredients=["anneal@seed:42069", "microanneal"]').stage("soup")
    assert isinstance(soup, SoupStagePlan)
    assert soup.ingredients == ["anneal-seed42069", "microanneal-0", "microanneal-1"]
    assert soup.depends_on == ["anneal", "microanneal"]


def test_from_a_seed_starts_from_that_run():
    plan = _plan('stages.eval-base.from=anneal@seed:666', 'stages.sft.from=anneal@seed:42069')
    assert plan.stage("eval-base").targets == ["anneal-seed666"]  # type: ignore[union-attr]
    sft = plan.stage("sft")
    assert sft.init_from == "anneal-seed42069" and sft.depends_on == ["anneal"]  # type: ignore[union-attr]
    anneal = plan.stage("anneal")
    assert isinstance(anneal, TrainStagePlan)
