"""What a recipe may read: the policy for the files it names in `extends` and `include`.

A recipe may come from someone else, so the files it pulls in are limited to what a recipe
needs: relative `.toml` paths (`..` allowed, so examples can extend the shipped specs), naming
regular files of at most 1 MiB, read as UTF-8. A device, a FIFO or a directory is refused
before it is read, and the check is repeated on the open file, so one swapped in between can
neither hang the checker nor fill its memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["MAX_RECIPE_BYTES", "RecipeFileError", "check_reference", "read_recipe_text"]

MAX_RECIPE_BYTES = 1 << 20
"""The largest recipe file read; the 32B recipe with its fragments is under 20 KiB."""


class RecipeFileError(Exception):
    """A file a recipe names breaks the policy, or cannot be read; carries a hint for the fix."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def check_reference(ref: str) -> None:
    """An `extends`/`include` entry names a relative .toml path.

    Raises:
        RecipeFileError: for an absolute path, another suffix, or a NUL character.
    """
    if "\0" in ref:
        raise RecipeFileError("a file name cannot contain a NUL character")
    if PurePosixPath(ref).is_absolute() or PureWindowsPath(ref).is_absolute() or ref.startswith("~"):
        raise RecipeFileError(f"{ref!r} is an absolute path",
                              "recipes name files relative to themselves, e.g. \"base/olmo2.toml\" or "
                              "\"../specs/tiny.toml\"")
    if not ref.endswith(".toml"):
        raise RecipeFileError(f"{ref!r} is not a .toml file", "recipes extend and include .toml files only")


def _regular(info: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise RecipeFileError(f"{shown} is {what}", "name a recipe file")
    if info.st_size > MAX_RECIPE_BYTES:
        raise RecipeFileError(f"{shown} is {info.st_size:,} bytes, more than a recipe's {MAX_RECIPE_BYTES:,}",
                              "recipes are small text files; split data out of them")


def read_recipe_text(path: Path, shown: str) -> str:
    """The text of a recipe file, after the policy's checks (`shown`: the path as messages show it).

    Raises:
        FileNotFoundError: when there is no such file.
        RecipeFileError: when it is not a regular file, is too large, not UTF-8, or unreadable.
    """
    try:
        _regular(os.stat(path), shown)  # follows symlinks: what would be opened
        # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RecipeFileError(f"cannot read {shown}: {exc.strerror or exc}") from None
    try:
        _regular(os.fstat(fd), shown)
        data = os.read(fd, MAX_RECIPE_BYTES + 1)
        while len(data) <= MAX_RECIPE_BYTES and (more := os.read(fd, MAX_RECIPE_BYTES + 1 - len(data))):
            data += more
    except OSError as exc:
        raise RecipeFileError(f"cannot read {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_RECIPE_BYTES:  # it grew after the checks
        raise RecipeFileError(f"{shown} is more than a recipe's {MAX_RECIPE_BYTES:,} bytes",
                              "recipes are small text files; split data out of them")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeFileError(f"{shown} is not UTF-8 text (byte {exc.start:,})", "save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it: positions count \n only
