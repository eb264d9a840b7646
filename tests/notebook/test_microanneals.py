"""The microanneal runner: what it compiles (through the checker), launches, cancels, compares and finds again.

Widget logic is driven by setting values in Python. Most tests start from a fake pretrained run (a sealed step
holding only its plan: enough to be found, never loaded); one fixture trains for real: a two-step pretraining
of the tiny recipe, then a microanneal started, cancelled, resumed and compared from the widget.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipywidgets")
torch = pytest.importorskip("torch")

import olmo2spec.notebook.microanneal_launch as launch  # noqa: E402
from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.notebook.microanneals import MicroannealRunner  # noqa: E402
from olmo2spec.plan.plan import to_json  # noqa: E402
from olmo2spec.runtime.checkpoint import PLAN, checksums_of, complete_steps, read_marker, seal, step_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.toml"


def fake_pretrained(checkpoints: Path, overrides: tuple[str, ...] = ()) -> Path:
    """`checkpoints/pretrain` with one sealed final step that carries the tiny plan (no weights)."""
    step = step_dir(checkpoints / "pretrain", 4)
    step.mkdir(parents=True)
    (step / PLAN).write_text(to_json(check(TINY, overrides).plan), encoding="utf-8")
    seal(step, checksums_of(step, [PLAN]), {"step": 4, "final": True, "stage": "pretrain", "run": "pretrain"})
    return checkpoints


def runner(tmp_path: Path, **kwargs: Any) -> MicroannealRunner:
    return MicroannealRunner(TINY, fake_pretrained(tmp_path / "checkpoints"), tmp_path / "microanneals",
                             tmp_path / "data", **kwargs)


def cli(verb: str, overrides: list[str], *options: str) -> subprocess.CompletedProcess[str]:
    words = [sys.executable, "-m", "olmo2spec", verb, str(TINY), *options]
    for override in overrides:
        words += ["--set", override]
    return subprocess.run(words, capture_output=True, text=True, cwd=ROOT, check=False)


def cli_plan(overrides: list[str]) -> Any:
    """What `olmo2spec explain --json` plans with these overrides."""
    explained = cli("explain", overrides, "--json")
    assert explained.returncode == 0, explained.stderr
    return json.loads(explained.stdout)


def test_the_choice_compiles_through_the_checker_as_the_cli_plans_it(tmp_path: Path) -> None:
    widget = runner(tmp_path)
    assert [p.run for p in widget.pretrained] == ["pretrain"]
    widget.candidates.value = "demo-math, demo-code+demo-math"
    widget.share.value = 0.25
    widget.tokens.value = "100K"
    widget.max_repeats.value = 2.0
    outcome = widget.outcome
    assert outcome is not None and outcome.ok and not widget.run_button.disabled
    overrides = outcome.choice.overrides()
    assert overrides[-1] == 'stages.microanneal.name="ma-1"'  # the rename last: the others address the stage
    assert cli("check", overrides).returncode == 0
    assert outcome.checked is not None and cli_plan(overrides) == json.loads(to_json(outcome.checked.plan))
    stage = outcome.stage
    assert stage is not None and [r.name for r in stage.runs] == ["ma-1-0", "ma-1-1"]
    assert stage.init_from == "pretrain"
    assert "ma-1-1" in widget.planned.value and "demo-code+demo-math" in widget.planned.value


def test_a_bad_share_shows_the_checkers_own_error(tmp_path: Path) -> None:
    widget = runner(tmp_path)
    widget.share.value = 1.5
    outcome = widget.outcome
    assert outcome is not None and not outcome.ok and widget.run_button.disabled
    printed = cli("check", outcome.choice.overrides()).stderr
    error = next(line for line in printed.splitlines() if "error[" in line)
    assert "error[E013]" in error and "candidate_share" in error
    assert error.replace('"', "&quot;") in widget.diagnostics.value or error in widget.diagnostics.value
    assert "W301" not in widget.diagnostics.value  # the recipe's own warnings are not this choice's


def test_a_budget_the_candidate_cannot_fill_shows_E051(tmp_path: Path) -> None:
    widget = runner(tmp_path)
    widget.tokens.value = "10M"
    assert "error[E051]" in widget.diagnostics.value and widget.run_button.disabled


def test_without_a_pretrained_checkpoint_it_says_where_it_looked(tmp_path: Path) -> None:
    widget = MicroannealRunner(TINY, tmp_path / "nothing", tmp_path / "microanneals", tmp_path / "data")
    assert widget.message.startswith("no pretrained checkpoint under ")
    assert str(tmp_path / "nothing") in widget.message and widget.run_button.disabled
    assert widget.pick.label == "(a new microanneal)"


def test_run_builds_the_bundle_and_starts_its_own_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.Popen

    def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append((command, kwargs["env"]))
        assert kwargs["start_new_session"]  # its own process group, which Cancel signals
        return real(["true"], **kwargs)

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    widget = runner(tmp_path, nproc=1, poll_seconds=0.05)
    widget.candidates.value = "demo-math"
    microanneal = widget.run()
    assert microanneal is not None
    widget.wait(30)
    monkeypatch.undo()  # the patch is subprocess's own: the CLI below needs the real one
    directory = tmp_path / "microanneals" / "ma-1"
    [(command, env)] = started
    assert command == ["bash", str(directory / "bundle" / "launch" / "local.sh"), "ma-1", "--nproc", "1"]
    assert env["CHECKPOINT_ROOT"] == str(tmp_path / "checkpoints") and env["DATA_ROOT"] == str(tmp_path / "data")
    assert env["OLMO2SPEC_STOP_FILE"] == str(directory / "STOP")
    record = json.loads((directory / "microanneal.json").read_text())
    assert record["overrides"] == widget.outcome.choice.overrides() and record["start"] == "pretrain"
    assert json.loads((directory / "bundle" / "plan.json").read_text()) == cli_plan(record["overrides"])
    assert widget.pick.value == "ma-1" and microanneal.state() == "stopped"  # `true` trained nothing
    assert not (directory / "launch.pid").exists()  # forgotten once its group is gone
    assert widget.run_button.description == "Resume"


def test_a_failed_launch_shows_the_launchers_last_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = subprocess.Popen

    def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return real(["bash", "-c", "echo 'error: DATA_ROOT is not set' >&2; exit 6"], **kwargs)

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    widget = runner(tmp_path, poll_seconds=0.05)
    microanneal = widget.run()
    widget.wait(30)
    assert microanneal is not None and microanneal.state() == "failed (exit 6)"
    assert "error: DATA_ROOT is not set" in widget.status.value and widget.run_button.description == "Resume"


def test_cancel_lets_the_running_candidate_stop_and_starts_no_other(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in launcher: a "trainer" that exits once the stop file appears, then the "next candidate"."""
    real = subprocess.Popen
    trainer = "import os, time\nwhile not os.path.exists(os.environ['OLMO2SPEC_STOP_FILE']): time.sleep(0.05)"
    next_candidate = tmp_path / "next-candidate-started"

    def popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        script = f"{shlex.quote(sys.executable)} -c {shlex.quote(trainer)}; touch {shlex.quote(str(next_candidate))}"
        return real(["bash", "-c", script], **kwargs)

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    widget = runner(tmp_path, poll_seconds=0.05)
    microanneal = widget.run()
    assert microanneal is not None and microanneal.running() and widget.cancel_button.disabled is False
    widget.cancel(grace=60)
    assert not microanneal.running() and microanneal.stop_file.exists()
    assert not next_candidate.exists()  # the launcher was stopped: it started nothing after the stopped run
    widget.wait(30)
    assert microanneal.state() == "stopped" and widget.run_button.description == "Resume"


def test_a_name_whose_runs_exist_under_the_checkpoint_root_is_refused(tmp_path: Path) -> None:
    widget = runner(tmp_path)
    widget.name.value = "old"
    (tmp_path / "checkpoints" / "old-0").mkdir()
    assert widget.run() is None
    assert "old-0 exists already" in widget.status.value and not (tmp_path / "microanneals" / "old").exists()


# --- one real microanneal ---------------------------------------------------------------------------------------

SMALL = ("runtime.log_every=1", "checkpoint.every_steps=1000", "stages.pretrain.tokens=8192",
         "stages.pretrain.lr.warmup_steps=1")
"""A two-step pretraining; steps of 16 x 256 tokens, logged (and so checked for the stop file) at every step."""
STEPS = 24
"""The microanneal's: enough that Cancel, seen after step 2, lands before the end on a fast machine too."""


def _shrink_heldout_text(data: Path) -> None:
    """Two held-out documents per source: the evaluation's loss in a second, not half a minute."""
    path = data / "eval" / "heldout-text.jsonl"
    kept: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        kept.setdefault(json.loads(line)["source"], []).append(line)
    path.write_text("".join(line + "\n" for lines in kept.values() for line in lines[:2]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`microanneal_from_the_widget`, evaluated in one thread (conftest's `one_thread`, for a whole module):
    three times faster than two on busy cores, for a model this small."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield microanneal_from_the_widget(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def microanneal_from_the_widget(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Pretrain two steps for real; from the widget, start a 24-step microanneal, cancel it, resume it to the end."""
    from olmo2spec.data.demo import build_demo_corpus
    from olmo2spec.emit.bundle import build_bundle

    root = tmp_path_factory.mktemp("microanneal")
    build_demo_corpus(root / "data")
    _shrink_heldout_text(root / "data")
    build_bundle(check(TINY, SMALL), root / "pretraining", "tiny.toml")
    env = {**launch.Microanneal(root, root / "checkpoints").environment(root / "data"), "OLMO2SPEC_STOP_FILE": ""}
    for stage in ("prepare", "pretrain"):
        subprocess.run(["bash", str(root / "pretraining" / "launch" / "local.sh"), stage, "--nproc", "1"], env=env,
                       check=True, capture_output=True)
    widget = MicroannealRunner(TINY, root / "checkpoints", root / "microanneals", root / "data", overrides=SMALL,
                               nproc=1, eval_limit=4, poll_seconds=0.2)
    widget.candidates.value = "demo-math"
    widget.tokens.value = str(STEPS * 16 * 256)
    microanneal = widget.run()
    assert microanneal is not None
    run_dir = root / "checkpoints" / "ma-1-0"
    seen: dict[str, Any] = {"root": root}
    while microanneal.progress()[0] < 2:  # training: cancel in the middle
        assert microanneal.running(), (root / "microanneals" / "ma-1" / "launch.log").read_text()
        widget.wait(0.2)
    widget.cancel(grace=120)
    widget.wait(30)
    seen["cancelled"] = {"state": microanneal.state(), "steps": complete_steps(run_dir),
                         "marker": read_marker(step_dir(run_dir, complete_steps(run_dir)[-1])),
                         "status": widget.status.value, "button": widget.run_button.description}
    widget.run()  # resumes
    widget.wait(300)
    seen["log"] = (root / "microanneals" / "ma-1" / "launch.log").read_text()
    seen["widget"] = widget
    return seen


def test_cancel_leaves_a_resumable_run(trained: dict[str, Any]) -> None:
    cancelled = trained["cancelled"]
    assert cancelled["state"] == "stopped" and cancelled["button"] == "Resume"
    assert cancelled["steps"] and 2 <= cancelled["steps"][-1] < STEPS and not cancelled["marker"].get("final")
    assert f"resuming ma-1-0 from {trained['root'] / 'checkpoints' / 'ma-1-0'}" in trained["log"]


def test_a_microanneal_started_from_the_widget_trains_and_its_row_appears(trained: dict[str, Any]) -> None:
    widget = trained["widget"]
    assert widget.current.state() == "finished" and widget.progress.value == widget.progress.max == STEPS
    assert [r["label"] for r in widget.rows] == ["pretrained", "microanneal: demo-math"]
    assert [r["run"] for r in widget.rows] == ["pretrain", "ma-1-0"]
    assert "microanneal: demo-math" in widget.table.value and "math held-out %" in widget.table.value
    assert [t.name for t in widget.chart.data] == ["ma-1-0: demo-math"] and len(widget.chart.data[0].x) == STEPS


def test_reopening_finds_the_finished_microanneal_without_rerunning_it(trained: dict[str, Any],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a finished microanneal was launched again")

    monkeypatch.setattr(launch.subprocess, "Popen", refuse)
    root = trained["root"]
    widget = MicroannealRunner(TINY, root / "checkpoints", root / "microanneals", root / "data", overrides=SMALL,
                               eval_limit=4)
    assert widget.pick.options == (("(a new microanneal)", ""), ("ma-1", "ma-1"))
    assert widget.pick.label == "(a new microanneal)"  # shown as chosen, not blank
    assert widget.name.value == "ma-2"
    widget.pick.value = "ma-1"
    widget.wait(60)
    assert widget.run_button.disabled and "finished" in widget.status.value
    assert widget.rows == trained["widget"].rows  # read back from the evaluation's cache, not recomputed
