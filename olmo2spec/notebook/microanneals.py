"""The microanneal runner: from a pretrained checkpoint, try candidate sources in small anneals (section 4.4.2).

Choose where to start (a finished pretrain run under the checkpoint root), the candidates, the general
source, the candidate share, the token budget and the most repeats; every change is compiled as the
recipe's microanneal stage under `--set` overrides (`microanneal_choice`), so the diagnostics are
`olmo2spec check`'s. Run builds the bundle of those overrides under the run root and starts its own
`launch/local.sh` in the background (`microanneal_launch`); the progress bar and the loss curves follow
the runs' metrics.jsonl; Cancel stops resumably. When every candidate has finished, the table compares
each with the checkpoint it started from, with demo-report's evaluation and rows (Table 12 of the
paper, in shape). Microanneals already under the run root are listed and shown, never rerun.
"""

from __future__ import annotations

import html
import os
import threading
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import polars as pl

from olmo2spec.compiler import check
from olmo2spec.notebook.microanneal_choice import (
    ChoiceOutcome,
    MicroannealChoice,
    format_candidates,
    microanneal_stage_of,
    parse_candidates,
    recheck,
)
from olmo2spec.notebook.microanneal_launch import Microanneal, Pretrained, find_microanneals, pretrained_runs
from olmo2spec.notebook.runs import METRICS, MetricsTail
from olmo2spec.notebook.tables import html_table
from olmo2spec.spec.compose import ComposeCache
from olmo2spec.spec.diagnostics import Diagnostic, Severity, SpecError, error_summary
from olmo2spec.spec.quantity import format_tokens
from olmo2spec.spec.stages import MicroannealStage
from olmo2spec.terminal import printable

__all__ = ["MicroannealRunner", "comparison_frame", "plan_frame"]

_REPO = Path(__file__).resolve().parents[2]
NEW = "(a new microanneal)"


def _default_path(env: str, fallback: Path) -> Path:
    value = os.environ.get(env)
    return Path(value) if value else fallback


def comparison_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """demo-report's table (its header and cells) as a frame: the starting checkpoint, then each candidate."""
    from olmo2spec.runtime.demo_report import table_cells

    header, body = table_cells(rows)
    return pl.DataFrame(body, schema=header, orient="row")


def plan_frame(outcome: ChoiceOutcome) -> pl.DataFrame:
    """What the compiler planned for each candidate: its run, steps, tokens and mix (source % as explain prints)."""
    stage, checked = outcome.stage, outcome.checked
    if stage is None or checked is None:
        return pl.DataFrame()
    rows = []
    for run in stage.runs:
        mix = checked.plan.mixes[run.mix]
        shares = ", ".join(f"{r.source} {r.mix_pct:.1f}% ({r.repeats:.2f}x)" for r in mix.rows)
        rows.append((run.name, mix.description.removeprefix("microanneal candidate "), f"{stage.steps:,}",
                     format_tokens(stage.tokens), shares))
    return pl.DataFrame(rows, schema=["run", "candidate", "steps", "tokens", "mix % (repeats)"], orient="row")


def diagnostics_html(diagnostics: list[Diagnostic]) -> str:
    """The diagnostics as `olmo2spec check` prints them, errors red and warnings amber."""
    if not diagnostics:
        return '<span style="color:#2a7a2a">ok: the recipe checks with this microanneal</span>'
    colour = {Severity.ERROR: "#b00020", Severity.WARNING: "#a05a00"}
    lines = [f'<span style="color:{colour.get(d.severity, "inherit")}">'
             f'{html.escape(printable(d.render(), newlines=True))}</span>' for d in diagnostics]
    if summary := error_summary(diagnostics):
        lines.append(html.escape(summary))
    return f'<pre style="margin:0;white-space:pre-wrap">{chr(10).join(lines)}</pre>'


def _loss_figure() -> go.FigureWidget:
    figure = go.FigureWidget()
    figure.update_layout(title="loss", xaxis_title="step", height=320, template="plotly_white",
                         margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return figure


class MicroannealRunner(widgets.VBox):  # type: ignore[misc]  # ipywidgets ships no types
    """Choose, compile, run, follow, cancel and compare microanneals.

    Args:
        recipe: the recipe whose microanneal stage is varied; default $OLMO2SPEC_RECIPE, else specs/tiny.toml.
        checkpoint_root: where the pretrained checkpoints are and the runs train; default $CHECKPOINT_ROOT,
            else .demo/checkpoints.
        run_root: one directory per microanneal (record, bundle, log); default `microanneals` beside the
            checkpoint root.
        data_root: the data the runs read and the evaluation's files; default $DATA_ROOT.
        overrides: `--set` overrides applied before the runner's own (a shorter checkpoint interval, say).
        nproc: processes per run (`local.sh --nproc`); default the launcher's.
        eval_limit: evaluate only the first N items of each math split (demo-report's `--limit`).
    """

    def __init__(self, recipe: str | os.PathLike[str] | None = None, checkpoint_root: Path | None = None,
                 run_root: Path | None = None, data_root: Path | None = None, *, overrides: tuple[str, ...] = (),
                 nproc: int | None = None, eval_limit: int | None = None, poll_seconds: float = 2.0) -> None:
        super().__init__()
        self.recipe = Path(recipe) if recipe else _default_path("OLMO2SPEC_RECIPE", _REPO / "specs" / "tiny.toml")
        demo_checkpoints = _REPO / ".demo" / "checkpoints"
        self.checkpoint_root = Path(checkpoint_root or _default_path("CHECKPOINT_ROOT", demo_checkpoints))
        self.run_root = Path(run_root or self.checkpoint_root.parent / "microanneals")
        data = data_root or os.environ.get("DATA_ROOT")
        self.data_root = Path(data) if data else None
        self.base, self.nproc, self.eval_limit, self.poll_seconds = tuple(overrides), nproc, eval_limit, poll_seconds
        self._cache = ComposeCache()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.outcome: ChoiceOutcome | None = None
        self.stage_name: str | None = None
        """The recipe's microanneal stage, which the form's overrides vary."""
        self.pretrained: list[Pretrained] = []
        """The finished pretrain runs under the checkpoint root: where a microanneal may start."""
        self.current: Microanneal | None = None
        self._known: dict[str, Microanneal] = {}
        self.rows: list[dict[str, Any]] = []
        """The comparison's rows (demo-report's) of the microanneal shown, once it has finished."""

        style = {"description_width": "150px"}
        self.start = widgets.Dropdown(description="start from", style=style, layout={"width": "520px"})
        self.candidates = widgets.Text(description="candidates", continuous_update=False, style=style,
                                       layout={"width": "520px"},
                                       placeholder="one microanneal each, comma-separated; + joins sources")
        self.general = widgets.Dropdown(description="general source", style=style, layout={"width": "520px"})
        self.share = widgets.FloatText(description="candidate share", step=0.05, style=style)
        self.tokens = widgets.Text(description="tokens per run", continuous_update=False, style=style)
        self.max_repeats = widgets.FloatText(description="max repeats", step=1.0, style=style)
        self.name = widgets.Text(description="name", continuous_update=False, style=style)
        self.diagnostics = widgets.HTML()
        self.command = widgets.HTML()
        self.planned = widgets.HTML()
        self.pick = widgets.Dropdown(description="microanneal", style={"description_width": "90px"},
                                     layout={"width": "520px"})
        self.run_button = widgets.Button(description="Run", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="steps", layout={"width": "520px"})
        self.status = widgets.HTML()
        self.chart = _loss_figure()
        self.table = widgets.HTML()
        self.form = widgets.VBox([self.start, self.candidates, self.general, self.share, self.tokens,
                                  self.max_repeats, self.name, self.diagnostics, self.command, self.planned])
        buttons = widgets.HBox([self.run_button, self.cancel_button])
        self.children: tuple[Any, ...] = (self.pick, self.form, buttons, self.progress, self.status, self.chart,
                                          self.table)

        self.message = self._load_recipe()
        if self.message:
            self.children = (widgets.HTML(self.message), *self.children)
        for box in (self.start, self.candidates, self.general, self.share, self.tokens, self.max_repeats, self.name):
            box.observe(lambda _c: self._edited(), names="value")
        self.pick.observe(lambda _c: self._picked(), names="value")
        self.run_button.on_click(lambda _b: self.run())
        self.cancel_button.on_click(lambda _b: threading.Thread(target=self.cancel, daemon=True).start())
        self.refresh_list()
        self._edited()

    # -- the form -------------------------------------------------------------------------------
    def _load_recipe(self) -> str:
        """Fill the form from the recipe's microanneal stage; a message when there is nothing to run."""
        try:
            checked = check(self.recipe, self.base, cache=self._cache)
        except SpecError as exc:
            self.diagnostics.value = diagnostics_html(exc.diagnostics)
            return f"{html.escape(str(self.recipe))} does not check (below)"
        self.stage_name = microanneal_stage_of(checked.recipe)
        spec = next((s for s in checked.recipe.stages if isinstance(s, MicroannealStage)), None)
        sources = list(checked.recipe.sources)
        self.general.options = sources
        messages = []
        self.pretrained = pretrained_runs(self.checkpoint_root)
        self.start.options = [(p.label, p) for p in self.pretrained]
        self.start.value = self.pretrained[0] if self.pretrained else None
        if not self.pretrained:
            messages.append(f"no pretrained checkpoint under {html.escape(str(self.checkpoint_root))}: run the "
                            "recipe's pretrain stage (`just demo`), or set CHECKPOINT_ROOT")
        if spec is None:
            messages.append(f"{html.escape(str(self.recipe))} has no microanneal stage to vary")
            return "<br>".join(messages)
        self.candidates.value = format_candidates(spec.candidates)
        self.general.value = spec.general
        self.share.value = spec.candidate_share
        self.tokens.value = str(spec.tokens)
        self.max_repeats.value = spec.max_repeats
        self.name.value = self._free_name()
        self.candidates.tooltip = f"sources: {', '.join(sources)}"
        return "<br>".join(messages)

    def _free_name(self) -> str:
        taken = {p.name for p in self.run_root.iterdir()} if self.run_root.is_dir() else set()
        n = 1
        while f"ma-{n}" in taken or (self.checkpoint_root / f"ma-{n}-0").exists():
            n += 1
        return f"ma-{n}"

    def choice(self) -> MicroannealChoice | None:
        """The form as overrides of the recipe's microanneal stage; None when there is no stage or no start."""
        start: Pretrained | None = self.start.value
        if self.stage_name is None or start is None:
            return None
        return MicroannealChoice(self.recipe, self.stage_name, self.name.value.strip(), start.stage,
                                 parse_candidates(self.candidates.value), self.general.value or "",
                                 float(self.share.value), self.tokens.value, float(self.max_repeats.value), self.base)

    def _edited(self) -> None:
        choice = self.choice()
        if choice is None:
            self.outcome = None
            self.run_button.disabled = True
            return
        self.outcome = outcome = recheck(choice, self._cache)
        self.diagnostics.value = diagnostics_html(outcome.shown())
        self.command.value = f"<code>{html.escape(choice.command('build'))}</code>"
        frame = plan_frame(outcome)
        self.planned.value = html_table(frame, caption="planned runs") if frame.height else ""
        if not self.pick.value:
            self.run_button.disabled = not outcome.ok

    # -- the microanneals under the run root -----------------------------------------------------
    def refresh_list(self) -> None:
        found = find_microanneals(self.run_root, self.checkpoint_root)
        keep = self.pick.value
        self.pick.options = [(NEW, ""), *((m.name, m.name) for m in found)]  # "": None would show no selection
        self.pick.value = keep if keep in [m.name for m in found] else ""

    def _picked(self) -> None:
        name = self.pick.value
        if not name:
            self.current, self.rows = None, []
            self.form.layout.display = None
            self.status.value, self.table.value = "", ""
            self._edited()
            return
        if self.current is None or self.current.name != name:
            self.rows, self.table.value = [], ""
            self.current = self._known.setdefault(name, Microanneal(self.run_root / name, self.checkpoint_root))
        self.form.layout.display = "none"
        self.show()
        if self.current.state() in ("running", "finished"):
            self._follow()  # follows it, then evaluates (or reads the cached results) in the background

    # -- running --------------------------------------------------------------------------------
    def run(self) -> Microanneal | None:
        """Compile and launch the form's microanneal (or resume the one picked, when it stopped)."""
        if self.current is None:
            outcome = self.outcome
            if outcome is None or outcome.checked is None:
                return None
            try:
                self.current = Microanneal.create(self.run_root, outcome.checked, self.recipe,
                                                  outcome.choice.overrides(), outcome.choice.name,
                                                  outcome.choice.start, self.checkpoint_root)
            except (FileExistsError, OSError) as exc:
                self.status.value = f'<span style="color:#b00020">{html.escape(str(exc))}</span>'
                return None
            self._known[self.current.name] = self.current  # it holds the launcher's process (its exit status)
            self.refresh_list()
            self.pick.value = self.current.name
        if self.current.state() in ("running", "finished"):
            return self.current
        self.current.launch(self.data_root, self.nproc)
        self.show()  # Cancel enabled at once, not at the watcher's first look
        self._follow()
        return self.current

    def cancel(self, grace: float = 120.0) -> None:
        """Stop the microanneal shown, resumably (its runs checkpoint first); Run resumes it."""
        if self.current is not None:
            self.status.value = f"<b>{self.current.name}</b>: stopping (the running candidate saves a checkpoint)"
            self.current.cancel(grace)

    def _follow(self) -> None:
        """Follow the microanneal shown in a thread of its own (one shown before stops drawing when replaced)."""
        if self.current is not None:
            self._watcher = threading.Thread(target=self._poll, args=(self.current,), daemon=True,
                                             name=f"microanneal-{self.current.name}")
            self._watcher.start()

    def wait(self, timeout: float | None = None) -> None:
        """Until the microanneal shown has ended and its table is drawn (for tests and scripts)."""
        if self._watcher is not None:
            self._watcher.join(timeout)

    def _poll(self, microanneal: Microanneal) -> None:
        while microanneal.running() and self.current is microanneal:
            self.show(microanneal)
            threading.Event().wait(self.poll_seconds)
        self.show(microanneal)
        if self.current is microanneal and microanneal.state() == "finished":
            self._evaluate(microanneal)

    def _evaluate(self, microanneal: Microanneal) -> None:
        if self.data_root is None:
            self.table.value = "set DATA_ROOT (the demo corpus's eval/ files) to compare the candidates"
            return
        self.table.value = "evaluating the starting checkpoint and each candidate (once; the results are cached)..."
        try:
            rows = microanneal.comparison(self.data_root, self.eval_limit)
        except Exception as exc:  # an evaluation's own message (a missing eval file, a damaged checkpoint)
            self.table.value = f'<span style="color:#b00020">{html.escape(str(exc))}</span>'
            return
        with self._lock:
            if self.current is not microanneal:
                return
            self.rows = rows
            self.table.value = html_table(comparison_frame(rows), caption=(
                f"{microanneal.name}: each candidate against the checkpoint it started from "
                "(held-out loss in nats/token; math exact match, %)"))

    # -- drawing --------------------------------------------------------------------------------
    def show(self, microanneal: Microanneal | None = None) -> None:
        """Draw the microanneal picked (`microanneal`: only while it is the one picked): progress, state, curves."""
        microanneal = microanneal or self.current
        if microanneal is None:
            return
        with self._lock:
            if microanneal is not self.current:
                return
            done, total = microanneal.progress()
            state = microanneal.state()
            self.progress.max, self.progress.value = max(1, total), done
            self.status.value = (f"<b>{html.escape(microanneal.name)}</b>: {state}, {done:,}/{total:,} steps over "
                                 f"{len(microanneal.runs)} candidate(s); log: {html.escape(str(microanneal.log))}"
                                 + ("; Resume continues it from its checkpoints" if state == "stopped" else "")
                                 + (f"<pre>{html.escape(printable(microanneal.log_tail(), newlines=True))}</pre>"
                                    if state.startswith("failed") else ""))
            self.run_button.description = "Resume" if state.startswith(("stopped", "failed")) else "Run"
            self.run_button.disabled = state in ("running", "finished")
            self.cancel_button.disabled = state != "running"
            self._draw_losses(microanneal)

    def _draw_losses(self, microanneal: Microanneal) -> None:
        curves = []
        for run in microanneal.runs:
            tail = MetricsTail(self.checkpoint_root / run / METRICS)
            tail.read()
            curves.append((f"{run}: {microanneal.candidate(run)}", [r["step"] for r in tail.records],
                           [r["loss"] for r in tail.records]))
        with self.chart.batch_update():
            if [t.name for t in self.chart.data] != [c[0] for c in curves]:
                self.chart.data = []
                for name, _, _ in curves:
                    self.chart.add_scatter(name=name, mode="lines", x=[], y=[])
            for trace, (_, steps, losses) in zip(self.chart.data, curves, strict=True):
                trace.x, trace.y = steps, losses
