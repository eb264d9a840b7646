"""What makes a checkpoint step trustworthy: its COMPLETE marker, and a checksum of every file it holds.

A save ends with `seal()`: `CHECKSUMS.json` (size and sha256 of every file of the step) is written
atomically, then the COMPLETE marker, which records the sha256 of CHECKSUMS.json. So a complete step
always has its checksums, and COMPLETE -> CHECKSUMS.json -> every file is one chain: any byte changed
after the save is found by `verify()`, which every load calls on the files it reads.

At scale (a 13B step is ~200 GB over 512 ranks) no process reads the whole step to save or to check it:
each rank hashes the files it wrote (`rank_files`: DCP's `__<rank>_<n>.distcp`, its RNG extras, and
rank 0 the `.metadata`), and rank 0 writes the gathered result; a resume splits the verification over
its ranks. Sizes are compared before hashing, so a missing, empty or truncated file is found at once.
sha256, not blake2b: with SHA-NI it hashes ~1.1 GB/s per core here, blake2b ~0.5 GB/s.

A step written before checksums existed (its marker records none) is loaded with a warning: refusing it
would strand runs that are fine. A step whose marker records checksums but whose CHECKSUMS.json is gone is
refused like any other damaged file. This module needs no torch except in `model_files`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeGuard

from olmo2spec.atomic import write_atomic
from olmo2spec.runtime.checkpoint.steps import COMPLETE, PLAN, complete_steps, step_dir, step_number

__all__ = ["CHECKSUMS", "CheckpointError", "read_marker", "marker_digest", "advice", "rank_files", "checksums_of",
           "seal", "listed_files", "verify", "read_metadata", "data_files", "check_sizes", "model_files", "dcp_cause",
           "unreadable"]

CHECKSUMS = "CHECKSUMS.json"
_MARKER_KEY = "checksums"  # in COMPLETE: the sha256 of CHECKSUMS.json
_warned: set[Path] = set()


class CheckpointError(Exception):
    """A checkpoint step that cannot be used as it is; the message names the step, the file and what to do."""


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def advice(path: Path) -> str:
    """What to do with a damaged step: delete it, and its stage resumes from the previous complete step."""
    step = step_number(path)
    earlier = [] if step is None else [s for s in complete_steps(path.parent) if s < step]
    then = (f"it resumes from {step_dir(path.parent, earlier[-1]).name}, the previous complete checkpoint" if earlier
            else "no earlier complete checkpoint is left, so it starts again")
    return f"delete this step (rm -r {shlex.quote(str(path))}) and rerun its stage: {then}"


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {what}; {advice(path)}")


def _read(path: Path, name: str, *, missing: str) -> bytes:
    """The bytes of one bookkeeping file of a step; `missing` says what its absence means."""
    try:
        return (path / name).read_bytes()
    except FileNotFoundError:
        raise _damaged(path, missing) from None
    except OSError as exc:
        raise _damaged(path, f"{name} cannot be read ({exc.strerror})") from None


def marker_digest(path: Path) -> str:
    """The sha256 of a step's COMPLETE marker: what identifies the step's contents, not just its path and step.

    The marker records the checksum of CHECKSUMS.json, which records every file's: a step saved again (a run
    trained again to the same step number) has another digest unless every byte is the same.

    Raises:
        CheckpointError: when the marker cannot be read.
    """
    data = _read(path, COMPLETE, missing=f"it has no {COMPLETE} marker (its save did not finish)")
    return hashlib.sha256(data).hexdigest()


def read_marker(path: Path) -> dict[str, Any]:
    """The COMPLETE marker of a step directory.

    Raises:
        CheckpointError: when it cannot be read or is not the JSON object a save writes.
    """
    data = _read(path, COMPLETE, missing=f"it has no {COMPLETE} marker (its save did not finish)")
    try:
        marker = json.loads(data)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        marker = None
    if not isinstance(marker, dict):
        state = "empty" if not data.strip() else "not the JSON object a save writes"
        raise _damaged(path, f"its {COMPLETE} marker is {state}")
    step = marker.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:  # every save records the steps done
        raise _damaged(path, f"its {COMPLETE} marker has no step count (\"step\": {json.dumps(step)})")
    return marker


def rank_files(path: Path, rank: int) -> list[str]:
    """The files of a step that `rank` wrote (DCP names each rank's data files `__<rank>_<n>.distcp`; rank 0 also
    writes `.metadata` and the step's plan.json)."""
    names = sorted(p.name for p in path.glob(f"__{rank}_*.distcp"))
    names += [name for name in (f"extra-rank{rank}.pt",) + ((".metadata", PLAN) if rank == 0 else ())
              if (path / name).is_file()]
    return names


def checksums_of(path: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{file: {"bytes", "sha256"}} of some files of a step."""
    return {name: {"bytes": (path / name).stat().st_size, "sha256": sha256_file(path / name)} for name in names}


def seal(path: Path, checksums: dict[str, dict[str, Any]], marker: dict[str, Any]) -> None:
    """Make a written step complete: its CHECKSUMS.json, then COMPLETE (which records the former's sha256)."""
    text = json.dumps({"algorithm": "sha256", "files": dict(sorted(checksums.items()))}, indent=1) + "\n"
    write_atomic(path / CHECKSUMS, text, durable=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    write_atomic(path / COMPLETE, json.dumps({**marker, _MARKER_KEY: digest}, indent=2, sort_keys=True) + "\n",
                 durable=True)
    fd = os.open(path, os.O_RDONLY)  # the renames themselves
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def listed_files(path: Path, marker: dict[str, Any] | None = None, *, warn: bool = True
                 ) -> dict[str, dict[str, Any]] | None:
    """The step's checksums, checked against its marker; None for a step from before checksums (with a warning).

    Raises:
        CheckpointError: CHECKSUMS.json missing, unreadable or not the one the marker records.
    """
    marker = read_marker(path) if marker is None else marker
    digest = marker.get(_MARKER_KEY)
    if digest is None:
        if warn and path not in _warned:
            _warned.add(path)
            print(f"warning: checkpoint {path} has no {CHECKSUMS} (saved before olmo2spec wrote checksums): its "
                  "files cannot be verified", file=sys.stderr, flush=True)
        return None
    data = _read(path, CHECKSUMS, missing=f"{CHECKSUMS} is missing, though its {COMPLETE} marker records one")
    if hashlib.sha256(data).hexdigest() != digest:
        raise _damaged(path, f"{CHECKSUMS} does not match the checksum its {COMPLETE} marker records")
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        files = None
    if not _well_formed(files):  # its marker vouches for it, but it is not what `seal` writes
        raise _damaged(path, f"{CHECKSUMS} is not the file list a save writes")
    return files


def _well_formed(files: Any) -> TypeGuard[dict[str, dict[str, Any]]]:
    """{plain file name: {"bytes": int, "sha256": str}}, as `seal` writes it."""
    return isinstance(files, dict) and all(
        isinstance(name, str) and name and "/" not in name and name not in (".", "..")
        and isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)
        for name, entry in files.items())


def verify(path: Path, names: Iterable[str] | None = None, *, marker: dict[str, Any] | None = None,
           warn: bool = True) -> None:
    """Check files of a step (default: every one it lists) against its checksums.

    Raises:
        CheckpointError: naming the first file that is missing, not listed, of another size or other bytes.
    """
    listed = listed_files(path, marker, warn=warn)
    if listed is None:
        return
    names = list(listed if names is None else names)
    for name in names:  # every size first: cheap, and what a missing, empty or truncated file fails
        entry = listed.get(name)
        if entry is None:
            raise _damaged(path, f"{name} is not listed in {CHECKSUMS}")
        try:
            size = (path / name).stat().st_size
        except FileNotFoundError:
            raise _damaged(path, f"{name} is missing") from None
        if size != entry["bytes"]:
            raise _damaged(path, f"{name} has {size:,} bytes, its checksum in {CHECKSUMS} is of {entry['bytes']:,} "
                                 f"({'empty' if size == 0 else 'truncated or overwritten'})")
    for name, digest in zip(names, _sha256_files([path / name for name in names]), strict=True):
        if digest != listed[name]["sha256"]:
            raise _damaged(path, f"{name} does not match its checksum in {CHECKSUMS}: its bytes changed after the "
                                 "save (a disk, copy or transfer error)")


def _sha256_files(paths: list[Path]) -> list[str]:
    """Hashes of several files, on up to 8 threads (hashlib and reads release the GIL): a single-process load of a
    big step (an export reads every rank's files) is bound by the disk, not by one core's ~1 GB/s."""
    if len(paths) < 2:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1, 8), thread_name_prefix="checkpoint-verify") as pool:
        return list(pool.map(sha256_file, paths))


def read_metadata(path: Path) -> Any:
    """A step's DCP metadata.

    Raises:
        CheckpointError: a missing, truncated or foreign `.metadata` (unpickling raises anything).
    """
    import torch.distributed.checkpoint as dcp

    try:
        return dcp.FileSystemReader(str(path)).read_metadata()
    except Exception as exc:
        raise _damaged(path, f".metadata cannot be read ({type(exc).__name__}: {exc})") from None


def data_files(metadata: Any, *, model_only: bool) -> dict[str, int]:
    """The data files a load reads, each with the bytes it must hold at least (the end of its last entry)."""
    need: dict[str, int] = {}
    for index, info in metadata.storage_data.items():
        if not model_only or index.fqn.startswith("model."):
            need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    return need


def check_sizes(path: Path, need: dict[str, int]) -> None:
    """For a step without checksums: every data file there and as long as its `.metadata` says (no hashing).

    Raises:
        CheckpointError: naming the first file that is missing or too short.
    """
    for name, size in sorted(need.items()):
        try:
            got = (path / name).stat().st_size
        except FileNotFoundError:
            raise _damaged(path, f"{name} is missing") from None
        if got < size:
            raise _damaged(path, f"{name} has {got:,} bytes, its .metadata needs {size:,} "
                                 f"({'empty' if got == 0 else 'truncated'})")


def model_files(path: Path, *, warn: bool = True) -> list[str]:
    """The files a load of a step's model weights reads (`.metadata` and the data files with `model.` entries),
    verified (a step from before checksums: their sizes checked).

    Raises:
        CheckpointError: a damaged or unreadable `.metadata`, or a damaged data file.
    """
    marker = read_marker(path)
    listed = listed_files(path, marker, warn=warn)
    if listed is not None:
        verify(path, [".metadata"], marker=marker)
    need = data_files(read_metadata(path), model_only=True)
    if listed is None:
        check_sizes(path, need)
    else:
        verify(path, sorted(need), marker=marker)
    return [".metadata", *sorted(need)]


def unreadable(path: Path, exc: BaseException) -> CheckpointError:
    """What a load says when DCP cannot read a step whose files passed verification (or had no checksums)."""
    cause = dcp_cause(exc)
    what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return CheckpointError(f"checkpoint {path} cannot be loaded ({what}): a damaged file, or a checkpoint of "
                           f"another model? If its files are damaged, {advice(path)}")


def dcp_cause(exc: BaseException) -> BaseException:
    """The exception inside a DCP CheckpointException (which holds one per failed rank)."""
    failures = getattr(exc, "failures", None)
    return next(iter(failures.values()))[0] if failures else exc
