"""The run viewer: a run directory's `metrics.jsonl` as curves that follow the run while it writes.

Curves: loss, z-loss, gradient norm, learning rate against the plan's schedule (`lr_at`, what
`explain` prints and the trainer calls), tokens/s and MFU, with the spikes of loss and gradient
norm marked as the paper's section 3 defines them (`runtime.spikes`, the trainer's own scorer,
with the plan's window and sigmas). Following a run is cheap: a thread looks at the file's size
every few seconds and reads only the lines appended since.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from olmo2spec.plan.plan import Plan, TrainStagePlan, from_json
from olmo2spec.plan.schedule import lr_at
from olmo2spec.runtime.spikes import spike_flags
from olmo2spec.spec.training import RuntimeSpec

__all__ = ["MetricsTail", "RunViewer", "RunBrowser", "find_runs", "planned_lr", "METRICS", "PANELS"]

METRICS = "metrics.jsonl"
PANELS = {"loss": "loss", "z_loss": "z-loss", "grad_norm": "gradient norm", "lr": "learning rate",
          "tokens_per_s": "tokens/s", "mfu": "MFU"}
"""metrics.jsonl key -> panel title, in reading order (two per row)."""
SPIKED = ("loss", "grad_norm")
"""The series the paper scores for spikes."""
MAX_PLANNED_POINTS = 2000
"""The planned schedule is drawn with at most this many points (a 13B stage has 500,000 steps)."""


class MetricsTail:
    """The records of a metrics.jsonl, read incrementally: only complete lines appended since the last read.

    A resumed run rewrites the file without the records past its checkpoint (the trainer's
    `_truncate_metrics`), so a file that shrank is read again from the start, and a record whose
    step was already seen replaces it and every later one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records: list[dict[str, Any]] = []

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read(self) -> bool:
        """Take in what was appended; True when the records changed."""
        size = self.size()
        changed = False
        if size < self.offset:
            self.offset, self.records, changed = 0, [], True
        if size == self.offset:
            return changed
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read(size - self.offset)
        complete = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        for line in data[:complete].splitlines():
            if line.strip():
                self._add(json.loads(line))
                changed = True
        self.offset += complete
        return changed

    def _add(self, record: dict[str, Any]) -> None:
        while self.records and self.records[-1]["step"] >= record["step"]:
            self.records.pop()
        self.records.append(record)


def planned_lr(stage: TrainStagePlan) -> tuple[list[int], list[float]]:
    """The schedule as the metrics log it: the record of step N holds the rate of optimizer step N - 1."""
    stride = -(-stage.steps // MAX_PLANNED_POINTS)  # ceil: at most MAX_PLANNED_POINTS, plus the last step
    steps = [*range(1, stage.steps + 1, stride)]
    if steps[-1] != stage.steps:
        steps.append(stage.steps)
    return steps, [lr_at(stage.lr, step - 1) for step in steps]


def find_runs(checkpoint_root: Path) -> list[Path]:
    """The run directories under a checkpoint root that hold metrics, by name."""
    if not checkpoint_root.is_dir():
        return []
    return sorted(p for p in checkpoint_root.iterdir() if (p / METRICS).is_file())


def _stage_of(plan: Plan | None, run: str) -> TrainStagePlan | None:
    for stage in plan.stages if plan is not None else []:
        if isinstance(stage, TrainStagePlan) and any(r.name == run for r in stage.runs):
            return stage
    return None


ROW_HEIGHT = 280
"""Pixels per row of two panels: room for a title, tick labels and the step axis under each."""


def _figure() -> go.FigureWidget:
    """Six panels, two a row. The run's panels zoom together (one step axis); the learning rate has its own,
    which spans the plan's whole schedule: sharing that one would squeeze a short run into a sliver."""
    keys = list(PANELS)
    rows = -(-len(keys) // 2)
    grid = make_subplots(rows=rows, cols=2, subplot_titles=list(PANELS.values()),
                         vertical_spacing=0.28 / rows, horizontal_spacing=0.1)
    for i, key in enumerate(keys):
        row, col = i // 2 + 1, i % 2 + 1
        grid.add_trace(go.Scatter(name=PANELS[key], mode="lines", x=[], y=[], line={"width": 1.5}), row=row, col=col)
        if key in SPIKED:
            grid.add_trace(go.Scatter(name=f"{PANELS[key]} spikes", mode="markers", x=[], y=[],
                                      marker={"symbol": "x", "size": 9, "color": "crimson"}), row=row, col=col)
        if key == "lr":
            grid.add_trace(go.Scatter(name="planned", mode="lines", x=[], y=[],
                                      line={"dash": "dot", "color": "gray", "width": 1}), row=row, col=col)
        if i > 0 and key != "lr":
            grid.update_xaxes(matches="x", row=row, col=col)  # the first panel's step axis
    grid.update_layout(height=ROW_HEIGHT * rows, template="plotly_white", showlegend=False,
                       margin={"l": 10, "r": 10, "t": 40, "b": 30})
    grid.update_xaxes(title_text="step", title_standoff=4)
    return go.FigureWidget(grid)


class RunViewer(widgets.VBox):  # type: ignore[misc]  # ipywidgets ships no types
    """One run's curves, a status line and a table of its spikes; `watch()` follows a running run.

    Args:
        run_dir: a run directory ($CHECKPOINT_ROOT/<run>), holding metrics.jsonl or about to.
        plan: the plan of the bundle that trains it, for the planned schedule and the spike window;
            without one, the paper's window (1,000) and sigmas (7), and no planned schedule.
        poll_seconds: how often `watch()` looks at the file's size.
    """

    def __init__(self, run_dir: Path, *, plan: Plan | None = None, poll_seconds: float = 2.0) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.tail = MetricsTail(self.run_dir / METRICS)
        self.stage = _stage_of(plan, self.run_dir.name)
        runtime = plan.runtime if plan is not None else RuntimeSpec()
        self.spike_window, self.spike_sigmas = runtime.spike_window, runtime.spike_sigmas
        self.poll_seconds = poll_seconds
        self.figure = _figure()
        self.status = widgets.HTML()
        self.spike_table = widgets.HTML()
        self.children = (self.status, self.figure, self.spike_table)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        if self.stage is not None:
            self._trace("planned").update(x=planned_lr(self.stage)[0], y=planned_lr(self.stage)[1])
        self.refresh()

    # -- the data ------------------------------------------------------------------------------
    def frame(self) -> pl.DataFrame:
        """Every record, plus whether its loss and gradient norm are spikes."""
        records = self.tail.records
        frame = pl.DataFrame(records) if records else pl.DataFrame({key: [] for key in ("step", *PANELS)})
        for key in SPIKED:
            flags = spike_flags(frame[key].to_list(), self.spike_window, self.spike_sigmas)
            frame = frame.with_columns(pl.Series(f"{key}_spike", flags, dtype=pl.Boolean))
        return frame

    def spikes(self) -> pl.DataFrame:
        """The steps where loss or gradient norm spiked, with both values."""
        frame = self.frame()
        return frame.filter(pl.col("loss_spike") | pl.col("grad_norm_spike")).select(
            "step", "loss", "loss_spike", "grad_norm", "grad_norm_spike")

    # -- following the file --------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read what the run appended and redraw in place; True when something was new."""
        with self._lock:  # the watcher thread and a caller may both refresh
            if not self.tail.read() and self.status.value:
                return False
            self._draw()
            return True

    def watch(self) -> RunViewer:
        """Refresh every `poll_seconds` in a background thread until `stop()`."""
        if self._watcher is None or not self._watcher.is_alive():
            self._stop.clear()
            self._watcher = threading.Thread(target=self._poll, name=f"run-viewer-{self.run_dir.name}", daemon=True)
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        self._watcher = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if self.tail.size() != self.tail.offset:  # a stat per poll; reading only when it grew or shrank
                self.refresh()

    # -- drawing -------------------------------------------------------------------------------
    def _trace(self, name: str) -> Any:
        return next(t for t in self.figure.data if t.name == name)

    def _draw(self) -> None:
        frame = self.frame()
        steps = frame["step"].to_list()
        with self.figure.batch_update():
            for key, title in PANELS.items():
                self._trace(title).update(x=steps, y=frame[key].to_list())
            for key in SPIKED:
                spiked = frame.filter(pl.col(f"{key}_spike"))
                self._trace(f"{PANELS[key]} spikes").update(x=spiked["step"].to_list(), y=spiked[key].to_list())
        self.status.value = self._status_text(frame)
        spikes = self.spikes()
        from olmo2spec.notebook.tables import html_table

        self.spike_table.value = html_table(spikes, caption=f"spikes ({self.spike_sigmas:g} sigmas from the mean "
                                            f"of the last {self.spike_window:,} values)") if spikes.height else ""

    def _status_text(self, frame: pl.DataFrame) -> str:
        run = self.run_dir.name
        if frame.height == 0:
            return f"<b>{run}</b>: no metrics yet in {self.tail.path}"
        last = self.tail.records[-1]
        total = f"/{self.stage.steps:,}" if self.stage is not None else ""
        return (f"<b>{run}</b>: step {last['step']:,}{total} · tokens {last['tokens']:,} · loss {last['loss']:.4f} · "
                f"spike score loss {last['loss_spike_score']:.3f}, grad norm {last['grad_spike_score']:.3f}")


def _default_path(env: str, fallback: str) -> Path:
    return Path(os.environ.get(env) or Path(__file__).resolve().parents[2] / fallback)


class RunBrowser(widgets.VBox):  # type: ignore[misc]
    """The runs under a checkpoint root in a dropdown, and the viewer of the one chosen, following it.

    Args:
        checkpoint_root: where the runs are; default $CHECKPOINT_ROOT, else the demo's .demo/checkpoints.
        bundle: the bundle that trained them (its plan.json); default $OLMO2SPEC_BUNDLE, else generated/tiny.
    """

    def __init__(self, checkpoint_root: Path | None = None, bundle: Path | None = None, *,
                 poll_seconds: float = 2.0) -> None:
        super().__init__()
        self.checkpoint_root = checkpoint_root or _default_path("CHECKPOINT_ROOT", ".demo/checkpoints")
        self.bundle = bundle or _default_path("OLMO2SPEC_BUNDLE", "generated/tiny")
        plan_file = self.bundle / "plan.json"
        self.plan = from_json(plan_file.read_text(encoding="utf-8")) if plan_file.is_file() else None
        self.poll_seconds = poll_seconds
        runs = find_runs(self.checkpoint_root)
        self.picker = widgets.Dropdown(description="run", options=[p.name for p in runs],
                                       value=runs[0].name if runs else None)
        self.viewer: RunViewer | None = None
        self.children: tuple[Any, ...] = (self.picker,)
        self.picker.observe(lambda _change: self.show(), names="value")
        if not runs:
            self.children = (self.picker, widgets.HTML(
                f"no run with {METRICS} under {self.checkpoint_root}: run `just demo`, or set CHECKPOINT_ROOT"))
        self.show()

    def show(self) -> None:
        """View the chosen run (and stop following the one before)."""
        if self.viewer is not None:
            self.viewer.stop()
        if self.picker.value is None:
            return
        self.viewer = RunViewer(self.checkpoint_root / self.picker.value, plan=self.plan,
                                poll_seconds=self.poll_seconds).watch()
        self.children = (self.picker, self.viewer)
