"""A training run's saves and resumes with torch.distributed.checkpoint (DCP): sharded, at any world size.

Every rank calls every method. A save's directory without COMPLETE (a save killed midway) is never
loaded and is removed by the next save. Every load verifies the checksums of the files it reads first
(`integrity`), and turns what DCP raises on a damaged step into a CheckpointError that names the step,
the file and what to do. Retention is explicit: the newest `keep_last` checkpoints are kept, plus every
multiple of `permanent_every` and the final one, which are never deleted.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from olmo2spec.plan.plan import Plan, to_json
from olmo2spec.runtime.checkpoint.described import write_plan
from olmo2spec.runtime.checkpoint.fit import strip_wrappers, weight_names
from olmo2spec.runtime.checkpoint.integrity import (
    CheckpointError,
    check_sizes,
    checksums_of,
    data_files,
    listed_files,
    rank_files,
    read_marker,
    read_metadata,
    seal,
    unreadable,
    verify,
)
from olmo2spec.runtime.checkpoint.steps import complete_steps, partial_steps, step_dir

__all__ = ["Checkpointer"]


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _wait(future: Any) -> None:
    """Wait for a DCP async save (a Future, or an AsyncSaveResponse in newer torch)."""
    future.result() if hasattr(future, "result") else future.upload_completion.result()


def _hash_when_written(future: Any, path: Path, rank: int) -> dict[str, dict[str, Any]]:
    """In the background: wait for this rank's async write, then hash the files it wrote."""
    _wait(future)
    return checksums_of(path, rank_files(path, rank))


class Checkpointer:
    """Saves and restores one run's model and optimizer; every rank calls every method.

    With `async_save`, the state is staged to host memory and written by a background thread
    while training continues (DCP `async_save`, on its own gloo group), and a second background
    thread hashes this rank's files once they are written; the checksums are gathered and the
    COMPLETE marker written only once every rank's write has finished, at the next save or at
    `finish()`. With `plan`, every step carries a copy of it (`described`).
    """

    def __init__(self, run_dir: Path, *, keep_last: int, permanent_every: int, async_save: bool = False,
                 group: dist.ProcessGroup | None = None, plan: Plan | None = None) -> None:
        self.run_dir = run_dir
        self.plan_json = None if plan is None else to_json(plan)  # saved with every step: it describes itself
        self.keep_last = keep_last
        self.permanent_every = permanent_every
        self.async_save = async_save
        self.group = group
        self._pending: tuple[Path, Future[dict[str, dict[str, Any]]], dict[str, Any]] | None = None
        self._hasher: ThreadPoolExecutor | None = None

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             meta: dict[str, Any], *, final: bool = False) -> Path:
        """Save at `step` (steps done); mark it complete (now, or when its background write ends)."""
        self.finish()
        path = step_dir(self.run_dir, step)
        if _rank() == 0:
            if path.exists():  # a save of this step killed earlier
                shutil.rmtree(path)
            path.mkdir(parents=True)
            if self.plan_json is not None:
                write_plan(path, self.plan_json)
        _barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        torch.save({"torch_rng": torch.get_rng_state()}, path / f"extra-rank{_rank()}.pt")
        marker = {**meta, "step": step, "final": final}
        if self.async_save and not final:
            future = dcp.async_save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path),
                                    process_group=self.group)
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-hash")
            self._pending = (path, self._hasher.submit(_hash_when_written, future, path, _rank()), marker)
        else:
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
            self._complete(path, marker, checksums_of(path, rank_files(path, _rank())))
        return path

    def finish(self) -> None:
        """Wait for a background save and mark it complete (a no-op when none is pending)."""
        if self._pending is None:
            return
        path, hashed, marker = self._pending
        self._pending = None
        self._complete(path, marker, hashed.result())  # the write's own error, if it failed, is raised here

    def _complete(self, path: Path, marker: dict[str, Any], mine: dict[str, dict[str, Any]]) -> None:
        """Gather every rank's checksums on rank 0, which seals the step (CHECKSUMS.json, then COMPLETE)."""
        gathered: list[Any] = [mine]
        if dist.is_initialized():
            gathered = [None] * _world() if _rank() == 0 else []
            dist.gather_object(mine, gathered if _rank() == 0 else None, dst=0, group=self.group)
        if _rank() == 0:
            seal(path, {name: entry for part in gathered for name, entry in part.items()}, marker)
            self._retain()
        _barrier()

    def load(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, *,
             absent_ok: Collection[str] = ()) -> dict[str, Any]:
        """Load model (and optimizer) state from a complete checkpoint, verified first; returns its marker.

        `absent_ok`: model weights (bare names) the step may lack, left as they are when it does (a scalar
        model's `score` started from a policy's checkpoint); model weights only (no optimizer).

        Raises:
            CheckpointError: the same on every rank, for a damaged step (naming the file) or one DCP cannot read.
        """
        marker = self._verified_marker(path)
        assert not (absent_ok and optimizer is not None), "absent_ok loads model weights only"
        try:
            if optimizer is None:
                model_sd = get_model_state_dict(model)
                absent = set(absent_ok) - weight_names(path) if absent_ok else set()
                model_sd = {k: v for k, v in model_sd.items() if strip_wrappers(k) not in absent}
                dcp.load({"model": model_sd}, checkpoint_id=str(path))
                set_model_state_dict(model, model_sd, options=StateDictOptions(strict=not absent))
            else:
                model_sd, optim_sd = get_state_dict(model, optimizer)
                state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
                dcp.load(state, checkpoint_id=str(path))
                set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
            extra = path / f"extra-rank{_rank()}.pt"
            if extra.is_file():  # a resume at another world size has no extras for new ranks
                torch.set_rng_state(torch.load(extra, weights_only=True)["torch_rng"])
        except (CheckpointException, RuntimeError, OSError, ValueError, KeyError) as exc:  # a step from before
            raise unreadable(path, exc) from None  # checksums; DCP's CheckpointException is a BaseException
        return marker

    def _verified_marker(self, path: Path) -> dict[str, Any]:
        """The step's marker, once every file of the step is verified, each by one rank; any rank's finding is
        raised on all of them (so that none goes on into DCP's collectives alone)."""
        marker: dict[str, Any] = {}
        problem = None
        try:
            marker = read_marker(path)
            listed = listed_files(path, marker, warn=_rank() == 0)
            if listed is not None:
                verify(path, sorted(listed)[_rank()::_world()], marker=marker)
            else:  # a step from before checksums: a readable .metadata and data files of the sizes it says
                check_sizes(path, data_files(read_metadata(path), model_only=False))
        except CheckpointError as exc:
            problem = str(exc)
        problems = [problem]
        if dist.is_initialized():
            problems = [None] * _world()
            dist.all_gather_object(problems, problem, group=self.group)
        found = next((p for p in problems if p is not None), None)
        if found is not None:
            raise CheckpointError(found)
        return marker

    def _retain(self) -> None:
        for partial in partial_steps(self.run_dir):  # saves killed midway: never loadable
            shutil.rmtree(partial, ignore_errors=True)
        steps = complete_steps(self.run_dir)
        keep = set(steps[-self.keep_last:])
        for step in steps:
            path = step_dir(self.run_dir, step)
            permanent = self.permanent_every and step % self.permanent_every == 0
            if step in keep or permanent or _is_final(path):
                continue
            shutil.rmtree(path, ignore_errors=True)


def _is_final(path: Path) -> bool:
    """Whether a step is a run's final one; a step whose marker cannot be read is kept as if it were (for a person
    to look at): retention deletes only what it knows it may."""
    try:
        return bool(read_marker(path).get("final"))
    except CheckpointError:
        return True
