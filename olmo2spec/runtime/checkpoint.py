"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, resumable at any world size.

Layout of a run's directory ($CHECKPOINT_ROOT/<run>):
    step-0000100/            a DCP checkpoint: {"model": ..., "optim": ...} plus `.metadata`
    step-0000100/extra-rank0.pt   per-rank extras (RNG states)
    step-0000100/COMPLETE    written by rank 0 after every rank finished: what makes it count
A directory without COMPLETE (a save killed midway) is never loaded and is removed by the next
save. Retention is explicit: the newest `keep_last` checkpoints are kept, plus every multiple of
`permanent_every` and the final one, which are never deleted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

__all__ = ["Checkpointer", "step_dir", "complete_steps", "latest_complete", "load_model_weights",
           "read_marker", "COMPLETE"]

COMPLETE = "COMPLETE"


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"step-{step:07d}"


def read_marker(path: Path) -> dict[str, Any]:
    """The COMPLETE marker of a checkpoint directory."""
    return json.loads((path / COMPLETE).read_text())  # type: ignore[no-any-return]


def complete_steps(run_dir: Path) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    if not run_dir.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in run_dir.glob("step-*") if (p / COMPLETE).is_file())


def latest_complete(run_dir: Path) -> Path | None:
    steps = complete_steps(run_dir)
    return step_dir(run_dir, steps[-1]) if steps else None


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class Checkpointer:
    """Saves and restores one run's model and optimizer; every rank calls every method.

    With `async_save`, the state is staged to host memory and written by a background thread
    while training continues (DCP `async_save`, on its own gloo group); the COMPLETE marker is
    written only once every rank's write has finished, at the next save or at `finish()`.
    """

    def __init__(self, run_dir: Path, *, keep_last: int, permanent_every: int, async_save: bool = False,
                 group: dist.ProcessGroup | None = None) -> None:
        self.run_dir = run_dir
        self.keep_last = keep_last
        self.permanent_every = permanent_every
        self.async_save = async_save
        self.group = group
        self._pending: tuple[Path, Any, dict[str, Any]] | None = None

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             meta: dict[str, Any], *, final: bool = False) -> Path:
        """Save at `step` (steps done); mark it complete (now, or when its background write ends)."""
        self.finish()
        path = step_dir(self.run_dir, step)
        if _rank() == 0:
            if path.exists():  # a save of this step killed earlier
                shutil.rmtree(path)
            path.mkdir(parents=True)
        _barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        torch.save({"torch_rng": torch.get_rng_state()}, path / f"extra-rank{_rank()}.pt")
        marker = {**meta, "step": step, "final": final}
        if self.async_save and not final:
            future = dcp.async_save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path),
                                    process_group=self.group)
            self._pending = (path, future, marker)
        else:
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
            self._complete(path, marker)
        return path

    def finish(self) -> None:
        """Wait for a background save and mark it complete (a no-op when none is pending)."""
        if self._pending is None:
            return
        path, future, marker = self._pending
        self._pending = None
        result = future.result() if hasattr(future, "result") else future.upload_completion.result()
        del result
        self._complete(path, marker)

    def _complete(self, path: Path, marker: dict[str, Any]) -> None:
        _barrier()
        if _rank() == 0:
            tmp = path / f".{COMPLETE}.tmp"
            tmp.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            tmp.rename(path / COMPLETE)
            self._retain()
        _barrier()

    def load(self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Load model (and optimizer) state from a complete checkpoint; returns its marker."""
        if optimizer is None:
            model_sd = get_model_state_dict(model)
            dcp.load({"model": model_sd}, checkpoint_id=str(path))
            set_model_state_dict(model, model_sd)
        else:
            model_sd, optim_sd = get_state_dict(model, optimizer)
            state = {"model": model_sd, "optim": optim_sd}
            dcp.load(state, checkpoint_id=str(path))
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        extra = path / f"extra-rank{_rank()}.pt"
        if extra.is_file():  # a resume at another world size has no extras for new ranks
            torch.set_rng_state(torch.load(extra, weights_only=True)["torch_rng"])
        return read_marker(path)

    def _retain(self) -> None:
        for partial in self.run_dir.glob("step-*"):  # saves killed midway: never loadable
            if not (partial / COMPLETE).is_file():
                shutil.rmtree(partial, ignore_errors=True)
        steps = complete_steps(self.run_dir)
        keep = set(steps[-self.keep_last:])
        for step in steps:
            path = step_dir(self.run_dir, step)
            permanent = self.permanent_every and step % self.permanent_every == 0
            if step in keep or permanent or read_marker(path).get("final"):
                continue
            shutil.rmtree(path, ignore_errors=True)


def load_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights as one plain state dict, without a process group (for export, soups)."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    planner = _EmptyStateDictLoadPlanner(keys={"model"})  # the optimizer state is never read
    _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(path)), planner=planner, no_dist=True)
    return {k: v for k, v in state["model"].items()}

