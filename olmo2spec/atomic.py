"""Writing a file whole or not at all: under a temporary name beside it, then renamed over it (a full disk or
a kill never leaves half of it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_json_atomic", "temporary_name"]


def temporary_name(path: Path) -> Path:
    """Where `write_atomic` writes before the rename: hidden, beside `path`, one per process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, parents: bool = False,
                 durable: bool = False) -> None:
    """Write `data` (text as UTF-8) to `path`: a full disk or a kill leaves the old file or none, never half.

    `parents`: make the missing parent directories. A link stays a link (its target is replaced); a FIFO or a device
    (/dev/stdout) is written as it is, never renamed over. `durable`: flushed to disk before the rename
    (what a crash of the machine, not only of the process, must not tear).
    """
    target = Path(path)
    if target.exists() and not target.is_file():
        with target.open("wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        return
    real = Path(os.path.realpath(target))
    if parents:
        real.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(real)
    try:
        with tmp.open("wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, real)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False, parents: bool = False,
                      durable: bool = False) -> None:
    """`data` as JSON indented by 2, ending in a newline, written by `write_atomic`."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"
    write_atomic(path, text, parents=parents, durable=durable)
