"""Model souping (paper section 4.5): the weighted average of several runs' final model weights.

`soup()` streams: it keeps one fp32 accumulator for the whole model, which becomes the output
(in the ingredients' dtype: fp32 for OLMo 2's checkpoints), and reads one tensor of one ingredient
at a time from its DCP checkpoint. Peak memory is one model in fp32 plus a few copies of one
tensor, whatever the number of ingredients. Optimizer state is never read. Before any tensor is
read, every ingredient's DCP metadata (keys, shapes, dtypes) is compared with the first one's,
and a mismatch is refused naming the first difference. The files read are verified against each
ingredient's checksums first (`integrity`), and a tensor that is not finite (in an ingredient or the
result) is refused, naming it: a soup never writes NaN or inf.

The result is a DCP checkpoint holding {"model": ...} only (stages after a soup start a fresh
optimizer), with the same COMPLETE marker as `Checkpointer` writes ({...meta, "step": 0,
"final": true}, plus "optimizer": false) and CHECKSUMS.json, written last: a soup killed midway
leaves no marker and is never loaded. `Checkpointer.load(path, model, None)` reads it like any checkpoint.

`run_soup_stage()` is the `soup` stage kind: it finds each ingredient run's final checkpoint,
soups them into `$CHECKPOINT_ROOT/<stage>/step-0000000` and exports that to
`$CHECKPOINT_ROOT/<stage>/hf` as a Hugging Face model.

torch is imported inside the functions, so importing this module (to register the runner) stays light.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import Plan, to_json
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.runtime.checkpoint import (
    CHECKSUMS,
    COMPLETE,
    PLAN,
    CheckpointError,
    advice,
    check_fits,
    checksums_of,
    dcp_cause,
    final_step,
    marker_digest,
    model_files,
    rank_files,
    read_marker,
    read_metadata,
    seal,
    step_dir,
    step_plan,
    verify,
    write_plan,
)

__all__ = ["SoupError", "SoupReport", "soup", "soup_checked", "soup_meta", "why_soup_again", "model_metadata",
           "check_ingredients", "has_optimizer_state", "run_soup_stage"]

_MODEL = "model."
_DCP_FILES = (".metadata", ".distcp", ".tmp", CHECKSUMS, PLAN)  # what a soup killed midway may have left in its output


class SoupError(Exception):
    """The ingredients cannot be souped (missing, not checkpoints, different models) or the weights are wrong."""


@attrs.frozen(kw_only=True)
class SoupReport:
    out: Path
    names: list[str]
    weights: list[float]
    tensors: int
    """Model tensors averaged (every key of the model's state dict)."""
    bytes: int
    """Bytes of the soup's weights (in the ingredients' dtypes)."""
    seconds: float
    peak_rss_mib: float
    """This process's peak resident memory so far (VmHWM, else ru_maxrss), MiB."""

    def lines(self) -> list[str]:
        parts = [f"  {w:.4f} x {n}" for n, w in zip(self.names, self.weights, strict=True)]
        return [f"soup of {len(self.names)} ingredients:", *parts,
                f"{self.tensors} tensors, {self.bytes / 1e6:,.1f} MB, {self.seconds:.1f} s, "
                f"peak RSS {self.peak_rss_mib:,.0f} MiB -> {self.out}"]


def _peak_rss_mib() -> float:
    """This process's peak resident memory, MiB: VmHWM where Linux has it, else ru_maxrss.

    (ru_maxrss also counts the parent's resident memory when a large process forks and execs us.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


@contextmanager
def _quiet_dcp() -> Iterator[None]:
    """DCP warns on every call without a process group ("assuming ... a single process"): that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.distributed is disabled.*")
        warnings.filterwarnings("ignore", message=r".*assuming the intent is to (load|save) in a single process.*")
        yield


def _describe(md: Any) -> str:
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    if isinstance(md, TensorStorageMetadata):
        return f"shape {list(md.size)}, dtype {str(md.properties.dtype).removeprefix('torch.')}"
    return "a non-tensor value"


def model_metadata(path: Path) -> dict[str, Any]:
    """The DCP metadata of a checkpoint's model entries, keyed by parameter name (without `model.`).

    Raises:
        SoupError: when `path` is not a DCP checkpoint or holds no model weights.
    """
    if not (path / ".metadata").is_file() and not (path / COMPLETE).is_file():
        raise SoupError(f"{path} is not a checkpoint (no .metadata): "
                        f"{'it does not exist' if not path.exists() else 'a save that never finished?'}")
    try:
        if (path / COMPLETE).is_file():
            verify(path, [".metadata"])
        metadata = read_metadata(path).state_dict_metadata
    except CheckpointError as exc:
        raise SoupError(str(exc)) from None
    model = {k.removeprefix(_MODEL): v for k, v in metadata.items() if k.startswith(_MODEL)}
    if not model:
        raise SoupError(f"checkpoint {path} holds no model weights (no `model.` entries)")
    return model


def _mismatch(ref: dict[str, Any], other: dict[str, Any]) -> str | None:
    """The first difference of `other` from `ref` (in `ref`'s key order), or None."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    for key, want in ref.items():
        got = other.get(key)
        if got is None:
            return f"key {key} is missing ({_describe(want)} expected)"
        if isinstance(want, TensorStorageMetadata) != isinstance(got, TensorStorageMetadata):
            return f"key {key} is {_describe(got)}, expected {_describe(want)}"
        if isinstance(want, TensorStorageMetadata):
            if list(got.size) != list(want.size):
                return f"key {key} has shape {list(got.size)}, expected {list(want.size)}"
            if got.properties.dtype != want.properties.dtype:
                return (f"key {key} has dtype {str(got.properties.dtype).removeprefix('torch.')}, expected "
                        f"{str(want.properties.dtype).removeprefix('torch.')}")
    extra = [k for k in other if k not in ref]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return f"it has an extra key {extra[0]} ({_describe(other[extra[0]])}){more}"
    return None


def _name(path: Path) -> str:
    """An ingredient's name: its run (the directory above `step-NNNNNNN`), else the directory itself."""
    return path.parent.name if path.name.startswith("step-") and path.parent.name else path.name


def check_ingredients(ingredients: Sequence[Path], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare every ingredient's model metadata with the first's; returns the first's.

    Raises:
        SoupError: naming the first ingredient and key that differ.
    """
    if not ingredients:
        raise SoupError("a soup needs at least one ingredient")
    names = list(names) if names is not None else [_name(p) for p in ingredients]
    ref = model_metadata(ingredients[0])
    for path, name in zip(ingredients[1:], names[1:], strict=True):
        problem = _mismatch(ref, model_metadata(path))
        if problem is not None:
            raise SoupError(f"ingredient {name} ({path}) differs from {names[0]}: {problem}")
    return ref


def has_optimizer_state(path: Path) -> bool:
    """Whether a checkpoint holds optimizer state (a soup does not: load it with `optimizer=None`)."""
    if (path / COMPLETE).is_file():
        recorded = read_marker(path).get("optimizer")
        if recorded is not None:
            return bool(recorded)
    import torch.distributed.checkpoint as dcp

    return any(k.startswith("optim.") for k in dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def _check_weights(weights: Sequence[float], n: int) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise SoupError(f"{len(weights)} weights for {n} ingredients: give one weight per ingredient")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise SoupError(f"soup weights must be finite and non-negative, got {weights}")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise SoupError(f"soup weights must sum to 1, got {weights} (sum {sum(weights):.8g})")
    return weights


def _prepare_out(out: Path) -> None:
    """Make `out` an empty directory; remove what a soup killed midway left, refuse anything else."""
    if (out / COMPLETE).exists():
        raise SoupError(f"{out} is already a complete checkpoint: remove it to soup again")
    if out.exists():
        leftovers = [p for p in out.iterdir() if not p.name.endswith(_DCP_FILES) and not p.name.startswith(".")]
        if not out.is_dir() or leftovers:
            raise SoupError(f"{out} exists and is not an unfinished soup: refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)


@functools.cache
def _reader_class() -> Any:
    import torch.distributed.checkpoint as dcp

    class CachedReader(dcp.FileSystemReader):
        """A FileSystemReader that reads `.metadata` once instead of on every single-tensor load."""

        _cached: Any = None

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            if self._cached is None:
                self._cached = super().read_metadata(*args, **kwargs)
            return self._cached

    return CachedReader


def _reader(path: Path) -> Any:
    return _reader_class()(str(path))


def _load(model: dict[str, Any], key: str, reader: Any, name: str) -> None:
    """Read `key` of one ingredient into `model` (a one-key dict of the model); SoupError if it cannot be read."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dcp.load({"model": model}, storage_reader=reader, no_dist=True)
    except CheckpointException as exc:  # a BaseException: a truncated or corrupt file
        cause = dcp_cause(exc)
        what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise SoupError(f"ingredient {name} ({reader.path}): cannot read {key}: {what} (a truncated or corrupt "
                        f"checkpoint?); {advice(Path(reader.path))}") from cause


def _check_finite(tensor: Any, key: str, whose: str) -> None:
    """Refuse NaN or inf: a soup of them would be written as a model. (A sum is cheap and non-finite whenever any
    value is; the exact test, which allocates, runs only then.)"""
    import torch

    if tensor.is_floating_point() and not torch.isfinite(tensor.sum()) and not bool(torch.isfinite(tensor).all()):
        raise SoupError(f"{whose}: tensor {key} is not finite (NaN or inf): refusing to write a soup of it; "
                        "check that ingredient's run (its loss, or the checkpoint's files)")


def soup(ingredients: list[Path], weights: list[float], out: Path, *, meta: dict[str, Any],
         names: list[str] | None = None, plan: Plan | None = None) -> SoupReport:
    """Write the weighted average of the ingredients' model weights to `out` as a final DCP checkpoint.

    Args:
        ingredients: DCP checkpoint (step) directories of the same model.
        weights: one per ingredient, non-negative, summing to 1.
        out: the step directory to write (created; the remains of an interrupted soup are replaced).
        meta: recorded in the COMPLETE marker, with "step": 0, "final": true and "optimizer": false.
        names: what messages call the ingredients (default: their run directories' names).
        plan: the plan the soup carries (default: the one its first ingredient carries, if any).

    Raises:
        SoupError: bad weights, an ingredient that is not a checkpoint, ingredients that differ
            (the message names the first difference), or an `out` that is something else.
    """
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    start = time.perf_counter()
    ingredients = [Path(p) for p in ingredients]
    names = list(names) if names is not None else [_name(p) for p in ingredients]
    if len(names) != len(ingredients):
        raise SoupError(f"{len(names)} names for {len(ingredients)} ingredients")
    weights = _check_weights(weights, len(ingredients))
    ref = check_ingredients(ingredients, names)
    for path, name in zip(ingredients, names, strict=True):
        try:
            model_files(path)  # verified before a byte of them is used
        except CheckpointError as exc:
            raise SoupError(f"ingredient {name}: {exc}") from None
    try:
        described = plan if plan is not None else step_plan(ingredients[0])
    except CheckpointError as exc:
        raise SoupError(f"ingredient {names[0]}: {exc}") from None
    _prepare_out(out)
    if described is not None:  # the soup describes itself, as a training step does
        write_plan(out, to_json(described))

    readers = [_reader(p) for p in ingredients]
    tensors = {k: md.properties.dtype for k, md in ref.items() if isinstance(md, TensorStorageMetadata)}
    # The accumulator, which becomes the output: fp32 (fp64 for fp64 weights), allocated up front (before any
    # scratch tensor, so that freed scratch memory is not trapped between its tensors) but untouched: its
    # pages become resident as its tensors are filled.
    acc: dict[str, Any] = {k: torch.empty(md.size, dtype=torch.promote_types(md.properties.dtype, torch.float32))
                           if k in tensors else None for k, md in ref.items()}
    sizes = {k: acc[k].numel() * acc[k].element_size() for k in tensors}
    nbytes = sum(acc[k].numel() * dtype.itemsize for k, dtype in tensors.items())
    with _quiet_dcp(), torch.no_grad():
        for key in (k for k in ref if k not in tensors):  # not averageable: the first ingredient's value
            holder: dict[str, Any] = {key: None}
            _load(holder, key, readers[0], names[0])
            acc[key] = holder[key]
        # the largest tensors first, while little of the output is resident: their scratch space (the read
        # buffer and DCP's deserialisation, ~3 times their size) then adds least to the peak
        for key in sorted(tensors, key=lambda k: -sizes[k]):
            total = acc[key]
            _load({key: total}, key, readers[0], names[0])  # converted to fp32 as it is read
            _check_finite(total, key, f"ingredient {names[0]} ({ingredients[0]})")
            total.mul_(weights[0])
            if len(readers) > 1:
                buf = torch.empty(total.shape, dtype=tensors[key])  # one tensor of one ingredient at a time
                for reader, weight, name, path in zip(readers[1:], weights[1:], names[1:], ingredients[1:],
                                                      strict=True):
                    _load({key: buf}, key, reader, name)
                    _check_finite(buf, key, f"ingredient {name} ({path})")
                    total.add_(buf, alpha=weight)
                del buf
            _check_finite(total, key, "the soup")
            if total.dtype != tensors[key]:  # the soup keeps the ingredients' dtype (bf16 weights: rounded once)
                acc[key] = (total if tensors[key].is_floating_point else total.round_()).to(tensors[key])
            del total
        try:
            dcp.save({"model": acc}, checkpoint_id=str(out), no_dist=True)
        except CheckpointException as exc:  # a BaseException: a full disk would otherwise end the process
            cause = dcp_cause(exc)
            raise cause if isinstance(cause, OSError) else OSError(f"saving {out}: {cause}") from cause
    del acc
    marker = {**meta, "step": 0, "final": True, "optimizer": False}
    seal(out, checksums_of(out, rank_files(out, 0)), marker)  # last: without COMPLETE the soup does not count
    return SoupReport(out=out, names=names, weights=weights, tensors=len(ref), bytes=nbytes,
                      seconds=time.perf_counter() - start, peak_rss_mib=_peak_rss_mib())


def soup_meta(name: str, runs: list[str], paths: list[Path], weights: list[float]) -> dict[str, Any]:
    """What a soup's COMPLETE marker records: its name, each ingredient's run, checkpoint, step and marker digest
    (`marker_digest`: a run trained again to the same step is another ingredient), the weights.

    The paths are final steps (`final_step`), whose markers were read and checked.
    """
    recipe = [{"run": r, "checkpoint": str(p), "step": read_marker(p).get("step"), "complete": marker_digest(p)}
              for r, p in zip(runs, paths, strict=True)]
    return {"stage": name, "run": name, "kind": "soup", "ingredients": recipe, "weights": list(weights)}


def why_soup_again(out: Path, meta: dict[str, Any]) -> str | None:
    """None when the complete soup in `out` is intact and made as `meta` says (the same checkpoints and weights);
    else why it must be made again."""
    try:
        old = read_marker(out)
        verify(out)  # what the stages after it load
    except CheckpointError as exc:  # the soup's own output: made again from its (verified) ingredients
        return f"is damaged ({exc})"
    if old.get("ingredients") == meta["ingredients"] and old.get("weights") == meta["weights"]:
        return None
    return "was made from other checkpoints or weights"


def soup_checked(ingredients: list[Path], weights: list[float], out: Path, *, meta: dict[str, Any],
                 names: list[str], plan: Plan) -> SoupReport:
    """`soup()` of ingredients that are alike and hold `plan`'s model (what the stages after a soup build).

    Raises:
        SoupError: as `soup()`, or when the first ingredient is not `plan`'s model.
    """
    ref = check_ingredients(ingredients, names)
    try:
        check_fits(ingredients[0], plan, ref)
    except CheckpointError as exc:
        raise SoupError(f"ingredient {names[0]}: {exc}") from None
    return soup(ingredients, weights, out, meta=meta, names=names, plan=plan)


# --- the stage ---------------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _fail(stage: str, text: str, code: int) -> int:
    print(f"soup {stage}: {text}", file=sys.stderr, flush=True)
    return code


def run_soup_stage(ctx: RunContext) -> int:
    """Soup the final checkpoints of the stage's ingredient runs, then export the soup for Hugging Face.

    Exits `CHECKPOINT` for an ingredient missing, unfinished or mismatched (or an export of the soup refused),
    `IO` when the soup or its export could not be written.
    """
    from olmo2spec.plan.plan import SoupStagePlan
    from olmo2spec.runtime.export_hf import ExportError, export_hf, hf_config

    stage = ctx.stage
    assert isinstance(stage, SoupStagePlan)
    if int(os.environ.get("RANK", "0")) != 0:  # one writer, should a launcher start several processes
        return 0
    root = ctx.checkpoint_root
    paths = []
    for run in stage.ingredients:
        try:
            paths.append(final_step(root / run, who=f"ingredient {run}"))
        except CheckpointError as exc:
            return _fail(stage.name, str(exc), ExitCode.CHECKPOINT)

    out = step_dir(root / stage.name, 0)
    meta = soup_meta(stage.name, list(stage.ingredients), paths, list(stage.weights))
    done = (out / COMPLETE).is_file()
    if done:
        why = why_soup_again(out, meta)
        if why is None:
            _say(f"soup {stage.name}: already done ({out}), from the same {len(paths)} checkpoints")
        else:
            _say(f"soup {stage.name}: {out} {why}: souping again")
            shutil.rmtree(out)
            done = False
    if not done:
        try:
            report = soup_checked(paths, list(stage.weights), out, meta=meta, names=list(stage.ingredients),
                                  plan=ctx.plan)
        except SoupError as exc:
            return _fail(stage.name, str(exc), ExitCode.CHECKPOINT)
        except OSError as exc:  # a full disk, a permission
            return _fail(stage.name, f"writing {out} failed: {exc}", ExitCode.IO)
        for line in report.lines():
            _say(line)

    hf = root / stage.name / "hf"
    if done and (hf / "config.json").is_file():  # exports are atomic: a config.json means a whole one
        _say(f"soup {stage.name}: Hugging Face export already in {hf}")
        return 0
    try:
        hf_config(ctx.plan)
    except ExportError as exc:  # a model HF's Olmo2 cannot represent: the soup itself is fine
        _say(f"soup {stage.name}: no Hugging Face export: {exc}")
        return 0
    start = time.perf_counter()
    try:
        export_hf(out, ctx.plan, hf)
    except (ExportError, OSError) as exc:
        return _fail(stage.name, f"the soup is in {out}, but its Hugging Face export failed: {exc}",
                     ExitCode.IO if isinstance(exc, OSError) else ExitCode.CHECKPOINT)
    _say(f"soup {stage.name}: Hugging Face export in {hf} ({time.perf_counter() - start:.1f} s); "
         f"peak RSS {_peak_rss_mib():,.0f} MiB")
    return 0
