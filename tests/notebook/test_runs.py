"""The run viewer without a browser: curves, spike markers, the planned schedule, following a growing file."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from metrics_fixture import GRAD_SPIKE_STEP, LOSS_SPIKE_STEP, record, write_metrics

from olmo2spec.notebook.runs import PANELS, MetricsTail, RunBrowser, RunViewer, planned_lr
from olmo2spec.plan.plan import TrainStagePlan, from_json
from olmo2spec.plan.schedule import lr_at


def _xy(viewer: RunViewer, name: str) -> tuple[list[float], list[float]]:
    trace = next(t for t in viewer.figure.data if t.name == name)
    return list(trace.x), list(trace.y)


def test_a_tail_reads_complete_lines_only_and_starts_over_when_the_file_shrinks(tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "pretrain", range(1, 4))
    tail = MetricsTail(path)
    assert tail.read() and [r["step"] for r in tail.records] == [1, 2, 3]
    with open(path, "a") as out:
        out.write(json.dumps(record(4))[:20])  # the trainer is mid-line
    assert not tail.read() and len(tail.records) == 3
    path.write_text(json.dumps(record(1)) + "\n")  # a resumed run cut the file back to its checkpoint
    assert tail.read() and [r["step"] for r in tail.records] == [1]


def test_a_record_for_a_step_seen_before_replaces_it_and_the_ones_after(tmp_path: Path) -> None:
    path = write_metrics(tmp_path / "pretrain", range(1, 7))
    tail = MetricsTail(path)
    tail.read()
    write_metrics(tmp_path / "pretrain", range(5, 6))
    tail.read()
    assert [r["step"] for r in tail.records] == [1, 2, 3, 4, 5]


def test_every_curve_holds_the_records_and_the_spikes_are_marked(tmp_path: Path) -> None:
    write_metrics(tmp_path / "pretrain", range(1, 61))
    viewer = RunViewer(tmp_path / "pretrain")
    for key, title in PANELS.items():
        assert _xy(viewer, title) == ([float(s) for s in range(1, 61)], [record(s)[key] for s in range(1, 61)])
    assert _xy(viewer, "loss spikes") == ([LOSS_SPIKE_STEP], [record(LOSS_SPIKE_STEP)["loss"]])
    assert _xy(viewer, "gradient norm spikes") == ([GRAD_SPIKE_STEP], [record(GRAD_SPIKE_STEP)["grad_norm"]])
    assert viewer.spikes()["step"].to_list() == [LOSS_SPIKE_STEP, GRAD_SPIKE_STEP]
    assert f">{LOSS_SPIKE_STEP}</td>" in viewer.spike_table.value
    assert "<b>pretrain</b>: step 60 · tokens 245,760 · loss" in viewer.status.value


def test_the_plans_spike_window_and_sigmas_decide_what_is_marked(tmp_path: Path, plans) -> None:  # type: ignore[no-untyped-def]
    import attrs

    write_metrics(tmp_path / "pretrain", range(1, 61))
    tiny = plans["tiny"]
    lenient = attrs.evolve(tiny, runtime=attrs.evolve(tiny.runtime, spike_sigmas=1000.0))
    assert RunViewer(tmp_path / "pretrain", plan=lenient).spikes().height == 0
    assert RunViewer(tmp_path / "pretrain", plan=tiny).spikes().height == 2


def test_the_learning_rate_is_drawn_against_the_plans_schedule(tmp_path: Path, plans) -> None:  # type: ignore[no-untyped-def]
    write_metrics(tmp_path / "pretrain", range(1, 4))
    stage = plans["tiny"].stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    viewer = RunViewer(tmp_path / "pretrain", plan=plans["tiny"])
    steps, rates = _xy(viewer, "planned")
    assert (steps[0], steps[-1], len(steps)) == (1, stage.steps, stage.steps)
    assert rates == [lr_at(stage.lr, s - 1) for s in range(1, stage.steps + 1)]
    assert f"step 3/{stage.steps:,}" in viewer.status.value


def test_a_long_schedule_is_drawn_with_a_bounded_number_of_points(plans) -> None:  # type: ignore[no-untyped-def]
    stage = plans["13b"].stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    steps, rates = planned_lr(stage)
    assert len(steps) <= 2001 and steps[-1] == stage.steps and rates[-1] == lr_at(stage.lr, stage.steps - 1)


def test_refresh_draws_what_the_run_appended(tmp_path: Path) -> None:
    write_metrics(tmp_path / "pretrain", range(1, 11))
    viewer = RunViewer(tmp_path / "pretrain")
    assert not viewer.refresh()  # nothing new: nothing redrawn
    write_metrics(tmp_path / "pretrain", range(11, 21))
    assert viewer.refresh()
    assert _xy(viewer, "loss")[0] == [float(s) for s in range(1, 21)]


def test_watching_follows_a_run_that_is_still_writing(tmp_path: Path) -> None:
    viewer = RunViewer(tmp_path / "pretrain", poll_seconds=0.02).watch()
    try:
        assert "no metrics yet" in viewer.status.value
        for first in (1, 6):
            write_metrics(tmp_path / "pretrain", range(first, first + 5))
            deadline = time.monotonic() + 10
            while len(_xy(viewer, "loss")[0]) < first + 4 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert _xy(viewer, "loss")[0] == [float(s) for s in range(1, 11)]
    finally:
        viewer.stop()


def test_the_browser_lists_the_runs_and_views_the_chosen_one(tmp_path: Path) -> None:
    write_metrics(tmp_path / "ckpt" / "pretrain", range(1, 5))
    write_metrics(tmp_path / "ckpt" / "anneal-seed42", range(1, 3))
    (tmp_path / "ckpt" / "soup").mkdir()  # no metrics: not a training run
    browser = RunBrowser(tmp_path / "ckpt", tmp_path / "no-bundle", poll_seconds=60)
    try:
        assert browser.picker.options == ("anneal-seed42", "pretrain")
        assert browser.viewer is not None and len(_xy(browser.viewer, "loss")[0]) == 2
        browser.picker.value = "pretrain"
        assert browser.viewer.run_dir.name == "pretrain" and len(_xy(browser.viewer, "loss")[0]) == 4
    finally:
        assert browser.viewer is not None
        browser.viewer.stop()


def test_the_browser_says_where_it_looked_when_there_is_no_run(tmp_path: Path) -> None:
    browser = RunBrowser(tmp_path / "empty", tmp_path / "no-bundle")
    assert browser.viewer is None
    assert f"no run with metrics.jsonl under {tmp_path / 'empty'}" in browser.children[1].value


@pytest.mark.usefixtures("uninterrupted")
def test_a_real_tiny_run_logs_the_planned_rate_at_every_step(bundle, uninterrupted) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    plan = from_json((bundle / "bundle" / "plan.json").read_text())
    viewer = RunViewer(uninterrupted / "pretrain", plan=plan)
    steps, logged = _xy(viewer, "learning rate")
    planned = dict(zip(*_xy(viewer, "planned"), strict=True))
    assert steps and logged == [planned[s] for s in steps]
    assert viewer.frame().height == len(steps) == viewer.stage.steps  # type: ignore[union-attr]


def test_the_runs_panels_share_one_step_axis_and_the_schedule_keeps_its_own(tmp_path: Path, plans) -> None:  # type: ignore[no-untyped-def]
    write_metrics(tmp_path / "anneal-seed42", range(1, 21))  # 20 steps of a stage planned much longer
    layout = RunViewer(tmp_path / "anneal-seed42", plan=plans["tiny"]).figure.layout
    axes = {title: layout[f"xaxis{i + 1 if i else ''}"] for i, title in enumerate(PANELS.values())}
    assert [a.matches for t, a in axes.items() if t != "loss"] == ["x", "x", None, "x", "x"]  # lr: its own
    rows = sorted({tuple(layout[f"yaxis{i + 1 if i else ''}"].domain) for i in range(len(PANELS))})
    gaps = [(upper[0] - lower[1]) * layout.height for lower, upper in itertools.pairwise(rows)]
    assert len(rows) == 3 and min(gaps) >= 70  # pixels between rows: tick labels, "step" and a title fit
