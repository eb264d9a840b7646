"""A microanneal on disk: its bundle, its launch in the background with the bundle's own launcher, its stop.

Layout, one directory per microanneal under the run root (`<run root>/<name>/`):

    microanneal.json   the recipe and the `--set` overrides it was compiled with (`olmo2spec build` them again)
    bundle/            the launch bundle of the recipe with those overrides (`olmo2spec build ... -o`)
    launch.log         what `bundle/launch/local.sh <name>` printed
    launch.pid         the launcher's process group while it runs
    STOP               the trainer's stop file (`OLMO2SPEC_STOP_FILE`): present, a run checkpoints and stops

Its runs train in the checkpoint root itself (`$CHECKPOINT_ROOT/<name>-<j>`), beside the checkpoint they start
from, so the bundle needs nothing copied. Whether a microanneal finished, stopped or runs is read from those
runs' checkpoints and from the process group, never remembered: a reopened notebook finds it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

import olmo2spec
from olmo2spec.atomic import write_json_atomic
from olmo2spec.compiler import Checked
from olmo2spec.notebook.runs import METRICS, MetricsTail
from olmo2spec.plan.plan import Plan, TrainStagePlan, from_json

__all__ = ["Pretrained", "Microanneal", "pretrained_runs", "find_microanneals", "RECORD"]

RECORD = "microanneal.json"
STOP = "STOP"
PID = "launch.pid"
LOG = "launch.log"


@attrs.frozen
class Pretrained:
    """A finished run of a pretrain stage under the checkpoint root: what a microanneal may start from."""

    run: str
    stage: str
    step: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.run} (stage {self.stage}, step {self.step:,})"


def pretrained_runs(checkpoint_root: Path) -> list[Pretrained]:
    """The runs under `checkpoint_root` whose final checkpoint is complete and comes from a pretrain stage
    (as the plan the step carries says), by name. Unfinished, damaged and other runs are left out."""
    from olmo2spec.runtime.checkpoint import CheckpointError, final_step, read_marker, step_plan

    found = []
    for run_dir in sorted(p for p in checkpoint_root.iterdir() if p.is_dir()) if checkpoint_root.is_dir() else []:
        try:
            path = final_step(run_dir)
            plan = step_plan(path)
            step = int(read_marker(path)["step"])
        except CheckpointError:
            continue
        stage = _producer(plan, run_dir.name) if plan is not None else None
        if stage is not None and stage.kind == "pretrain":
            found.append(Pretrained(run_dir.name, stage.name, step, path))
    return found


def _producer(plan: Plan, run: str) -> TrainStagePlan | None:
    return next((s for s in plan.stages if isinstance(s, TrainStagePlan) and run in [r.name for r in s.runs]), None)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` lives. Zombies do not count: an orphaned trainer that exited waits for
    a PID 1 that may never reap it (containers), and `killpg(pgid, 0)` would still find it."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, zombies included
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, 0)
            return True
        return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "(comm)": state, ppid, pgrp, ...
        except OSError:  # ended meanwhile
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


class Microanneal:
    """One microanneal's directory: build it, launch it, follow it, stop it, find it again.

    Args:
        directory: `<run root>/<name>`.
        checkpoint_root: where its runs train and the checkpoint it starts from is.
    """

    def __init__(self, directory: Path, checkpoint_root: Path) -> None:
        self.directory = Path(directory)
        self.checkpoint_root = Path(checkpoint_root)
        self.process: subprocess.Popen[bytes] | None = None
        self._plan: Plan | None = None

    # -- made and read back ----------------------------------------------------------------------
    @classmethod
    def create(cls, run_root: Path, checked: Checked, recipe: Path, overrides: list[str], name: str,
               start: str, checkpoint_root: Path) -> Microanneal:
        """Build the bundle of `checked` (the recipe under `overrides`) into `<run_root>/<name>/bundle`, and record
        how it was compiled.

        Raises:
            FileExistsError: a microanneal of that name is there already, or one of its runs is under the checkpoint
                root (the trainer would take that run's checkpoints for its own); nothing is written then.
        """
        from olmo2spec.emit.bundle import build_bundle

        directory = Path(run_root) / name
        if (directory / RECORD).exists():
            raise FileExistsError(f"a microanneal named {name!r} is already in {directory}: choose another name")
        stage = checked.plan.stage(name)
        taken = [r.name for r in stage.runs if (Path(checkpoint_root) / r.name).exists()] \
            if isinstance(stage, TrainStagePlan) else []
        if taken:
            raise FileExistsError(f"{Path(checkpoint_root) / taken[0]} exists already: a microanneal named {name!r} "
                                  "would continue that run; choose another name")
        directory.mkdir(parents=True, exist_ok=True)
        build_bundle(checked, directory / "bundle", Path(recipe).name)
        write_json_atomic(directory / RECORD, {"name": name, "recipe": str(Path(recipe).absolute()),
                                               "overrides": overrides, "start": start}, sort_keys=True)
        return cls(directory, checkpoint_root)

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / RECORD).read_text(encoding="utf-8"))
        return data

    @property
    def bundle(self) -> Path:
        return self.directory / "bundle"

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = from_json((self.bundle / "plan.json").read_text(encoding="utf-8"))
        return self._plan

    @property
    def stage(self) -> TrainStagePlan:
        stage = self.plan.stage(self.name)
        assert isinstance(stage, TrainStagePlan)
        return stage

    @property
    def runs(self) -> list[str]:
        return [r.name for r in self.stage.runs]

    def candidate(self, run: str) -> str:
        """A run's candidate, as the plan's mix for it describes it ("demo-math", "demo-code+demo-web")."""
        mix = next(r.mix for r in self.stage.runs if r.name == run)
        return self.plan.mixes[mix].description.removeprefix("microanneal candidate ")

    # -- launched --------------------------------------------------------------------------------
    def command(self, nproc: int | None = None) -> list[str]:
        """The launcher's command line: the bundle's own `local.sh`, for this stage only."""
        words = ["bash", str(self.bundle / "launch" / "local.sh"), self.name]
        return words + (["--nproc", str(nproc)] if nproc is not None else [])

    def environment(self, data_root: Path | None) -> dict[str, str]:
        """The kernel's environment, plus where data and checkpoints are, the stop file, and this olmo2spec."""
        package_parent = str(Path(olmo2spec.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "CHECKPOINT_ROOT": str(self.checkpoint_root), "OLMO2SPEC_STOP_FILE": str(self.stop_file),
               "PYTHON": sys.executable, "PYTHONPATH": path}
        if data_root is not None:
            env["DATA_ROOT"] = str(data_root)
        return env

    @property
    def stop_file(self) -> Path:
        return self.directory / STOP

    @property
    def log(self) -> Path:
        return self.directory / LOG

    def launch(self, data_root: Path | None, nproc: int | None = None) -> subprocess.Popen[bytes]:
        """Start (or resume: finished runs are skipped by the trainer, a stopped one resumes) in the background."""
        if self.running():
            raise RuntimeError(f"microanneal {self.name} is already running")
        self.stop_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(nproc), env=self.environment(data_root), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)  # its own process group, to stop as one
        (self.directory / PID).write_text(f"{self.process.pid}\n", encoding="utf-8")
        return self.process

    def pgid(self) -> int | None:
        """The launcher's process group while any process of it lives (started here or by another kernel)."""
        if self.process is not None:
            pgid: int | None = self.process.pid
            alive = self.process.poll() is None or _group_alive(self.process.pid)
        else:
            try:
                pgid = int((self.directory / PID).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            alive = _group_alive(pgid)
        if not alive:  # gone: forget the number, which the system may give to another group later
            (self.directory / PID).unlink(missing_ok=True)
        return pgid if alive else None

    def running(self) -> bool:
        return self.pgid() is not None

    def exit_code(self) -> int | None:
        """The launcher's exit status, when it was started here and has ended."""
        return self.process.poll() if self.process is not None else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Until the launcher and everything it started have ended; the launcher's status (None: not started here)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (pgid := self.pgid()) is not None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"microanneal {self.name} still running (process group {pgid})")
            time.sleep(0.2)
        return self.exit_code()

    def cancel(self, grace: float = 120.0) -> None:
        """Stop, resumably: the stop file makes the training run save a checkpoint at its next logged step and
        exit; SIGTERM to the launcher itself keeps it from starting the next candidate. Whatever is still
        running after `grace` seconds gets SIGTERM as a group (it resumes from its latest complete checkpoint)."""
        pgid = self.pgid()
        if pgid is None:
            return
        self.stop_file.touch()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, signal.SIGTERM)  # the launcher (bash) is the group's leader; its children finish
        try:
            self.wait(grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            self.wait()

    # -- progress and outcome --------------------------------------------------------------------
    def log_tail(self, lines: int = 8) -> str:
        """The launcher's last lines (where a failed run says why)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def progress(self) -> tuple[int, int]:
        """(steps done, steps in all) over the candidates' runs, from their metrics.jsonl."""
        steps = self.stage.steps
        done = 0
        for run in self.runs:
            tail = MetricsTail(self.checkpoint_root / run / METRICS)
            tail.read()
            done += min(steps, tail.records[-1]["step"]) if tail.records else 0
        return done, steps * len(self.runs)

    def finished(self) -> bool:
        """Every candidate's run has its final checkpoint."""
        from olmo2spec.runtime.checkpoint import CheckpointError, final_step

        try:
            for run in self.runs:
                final_step(self.checkpoint_root / run)
        except CheckpointError:
            return False
        return True

    def state(self) -> str:
        if self.running():
            return "running"
        if self.finished():
            return "finished"
        code = self.exit_code()
        return "stopped" if code in (None, 0, -signal.SIGTERM, 128 + signal.SIGTERM) else f"failed (exit {code})"

    def comparison(self, data_root: Path, limit: int | None = None) -> list[dict[str, Any]]:
        """The demo suite on the checkpoint it started from and each candidate's final checkpoint: demo-report's
        rows (its labels, its evaluation, its cache beside each checkpoint), starting point first."""
        from olmo2spec.runtime.checkpoint import latest_complete
        from olmo2spec.runtime.demo_report import cached_evaluation, labelled_runs

        wanted = [self.stage.init_from, *self.runs]
        rows = []
        for label, run in sorted((lr for lr in labelled_runs(self.plan) if lr[1] in wanted),
                                 key=lambda lr: wanted.index(lr[1])):
            if (path := latest_complete(self.checkpoint_root / run)) is not None:
                rows.append({"label": label, "run": run, **cached_evaluation(self.plan, path, data_root, limit)})
        return rows


def find_microanneals(run_root: Path, checkpoint_root: Path) -> list[Microanneal]:
    """The microanneals recorded under a run root (each with its record and bundle), by name."""
    if not Path(run_root).is_dir():
        return []
    return [Microanneal(d, checkpoint_root) for d in sorted(Path(run_root).iterdir())
            if (d / RECORD).is_file() and (d / "bundle" / "plan.json").is_file()]
