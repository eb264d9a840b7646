"""Whether a checkpoint holds a plan's model: its weights' names and shapes against the model the plan builds.

One comparison for every consumer: export and eval check the weights they loaded, soup the `.metadata` of its
ingredients before it reads a tensor. The expected shapes come from the model itself, built on the meta device
(no memory, no hand-typed copy of its layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from olmo2spec.plan.plan import Plan
from olmo2spec.runtime.checkpoint.integrity import CheckpointError, read_metadata
from olmo2spec.runtime.model import ModelArgs, Transformer

__all__ = ["WRAPPER_PREFIXES", "strip_wrappers", "model_shapes", "misfit", "check_fits", "weight_names"]

WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.", "module.")
"""What torch.compile, activation checkpointing and DDP insert into parameter names."""


def strip_wrappers(key: str) -> str:
    """A parameter's name as the bare model has it."""
    for prefix in WRAPPER_PREFIXES:
        key = key.replace(prefix, "")
    return key


def model_shapes(plan: Plan) -> dict[str, tuple[int, ...]]:
    """Every entry of the state dict of `plan`'s model, in the model's order, with its shape."""
    with torch.device("meta"):
        model = Transformer(ModelArgs.from_plan(plan))
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def misfit(plan: Plan, found: Mapping[str, Any]) -> str | None:
    """How weights {name: shape} differ from `plan`'s model (the first difference), or None when they fit.

    Names may carry wrapper prefixes; a shape is anything with `.shape` or `.size` (a tensor, DCP metadata).
    """
    shapes = {strip_wrappers(name): _shape(value) for name, value in found.items()}
    expected = model_shapes(plan)
    for name, want in expected.items():
        got = shapes.get(name)
        if got is None:
            return f"checkpoint has no weight {name!r} (expected shape {list(want)})"
        if got != want:
            return f"weight {name!r} has shape {list(got)}, the plan's model expects {list(want)}"
    extra = [name for name in shapes if name not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return f"checkpoint has a weight the plan's model does not: {extra[0]!r}{more}"
    return None


def check_fits(path: Path, plan: Plan, found: Mapping[str, Any]) -> None:
    """Raises CheckpointError, naming the first difference, when the weights of step `path` are not `plan`'s model."""
    problem = misfit(plan, found)
    if problem is not None:
        raise CheckpointError(f"{problem}: is {path} a checkpoint of this plan's model?")


def _shape(value: Any) -> tuple[int, ...]:
    shape = getattr(value, "shape", None)
    # else DCP's TensorStorageMetadata; () for a non-tensor entry
    return tuple(shape if shape is not None else getattr(value, "size", ()))


def weight_names(path: Path) -> set[str]:
    """The model weights step `path` holds, by their bare names (from its `.metadata`: no tensor is read).

    Raises:
        CheckpointError: a missing or unreadable `.metadata`.
    """
    entries = read_metadata(path).state_dict_metadata
    return {strip_wrappers(key.removeprefix("model.")) for key in entries if key.startswith("model.")}
