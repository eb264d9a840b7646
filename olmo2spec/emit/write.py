"""Writing a bundle atomically: built beside the target, then swapped in with one rename.

A failed or interrupted build leaves the previous bundle as it was. On Linux the swap is
`renameat2(RENAME_EXCHANGE)`, atomic even when the old bundle exists; elsewhere two renames
with the old bundle restored if the second fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

__all__ = ["write_tree", "UnsafePath"]

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_BUILDING = ".building-"


class UnsafePath(ValueError):
    """A bundle file name that would land outside the bundle."""


def _check(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts or relative != str(path):
        raise UnsafePath(f"refusing to write {relative!r}: bundle files stay inside the bundle")
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories; False where the system cannot."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def _swap_in(built: Path, target: Path) -> None:
    if not target.exists():
        os.rename(built, target)
        return
    if _exchange(built, target):  # `built` now holds the old bundle
        shutil.rmtree(built)
        return
    old = built.with_name(built.name + "-old")
    os.rename(target, old)
    try:
        os.rename(built, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


def _remove_stale(target: Path) -> None:
    """Builds killed outright (SIGKILL) leave their hidden work directory; the next build removes it.

    Matched by prefix, not glob: a name like `run[1]` or `b*` must not match another bundle's.
    """
    prefix = f".{target.name}{_BUILDING}"
    for stale in target.parent.iterdir():
        if stale.name.startswith(prefix) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def write_tree(files: Mapping[str, bytes], target: Path, executable: frozenset[str] = frozenset()) -> None:
    """Write `files` (relative POSIX path -> content) as the directory `target`, atomically.

    Raises:
        UnsafePath: if a name is absolute or climbs out with `..`; nothing is written then.
    """
    checked = {_check(name): data for name, data in files.items()}
    target = target.resolve()  # a symlinked bundle directory: build and swap beside what it points to
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    built = Path(tempfile.mkdtemp(prefix=f".{target.name}{_BUILDING}", dir=target.parent))
    try:
        for name, data in sorted(checked.items()):
            path = built.joinpath(*name.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o755 if str(name) in executable else 0o644)
        for directory in [built, *(p for p in built.rglob("*") if p.is_dir())]:
            directory.chmod(0o755)  # not the umask's choice: bundles are identical everywhere
        _swap_in(built, target)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
