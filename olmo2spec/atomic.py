"""Writing a text file whole or not at all (a full disk or a kill never leaves half of it)."""

from __future__ import annotations

import os

__all__ = ["write_whole"]


def write_whole(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all; through a link, and into a FIFO or device as it is."""
    if os.path.exists(path) and not os.path.isfile(path):  # /dev/stdout, a FIFO: never renamed over
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    real = os.path.realpath(path)  # a link stays a link
    # Written beside the target and renamed over it: a full disk or a kill leaves the old file whole.
    directory, name = os.path.split(real)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, real)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
