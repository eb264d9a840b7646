"""Writing a bundle atomically: built beside the target, then swapped in with one rename.

Order of steps, so that a kill at any instant leaves a complete bundle (old or new) and every run
output where the next build finds it: write the generated files into a hidden directory beside
the target; move in what the old bundle holds that is not generated (carry.py); swap; then clear
the old tree, which by then holds only generated files (listed files unlinked, empty directories
removed: never a recursive delete; what a running job wrote into it meanwhile moves in too).
A later build carries whatever a killed one left beside.
A failed build puts back what it moved. On Linux the swap is `renameat2(RENAME_EXCHANGE)`, atomic
even when the old bundle exists; elsewhere two renames with the old bundle restored if the second
fails. Builds in one directory take turns (flock), so two at once both succeed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from olmo2spec.emit.carry import MANIFEST, Carried, Journal, carry, clear, undo
from olmo2spec.terminal import printable

__all__ = ["write_tree", "UnsafePath", "Carried"]

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


def _swap_in(built: Path, target: Path) -> Path | None:
    """Put `built` at `target`; return where the old bundle is now (None when there was none)."""
    if not target.exists():
        os.rename(built, target)
        return None
    if _exchange(built, target):  # `built` now holds the old bundle
        return built
    old = built.with_name(built.name + "-old")  # same prefix: a kill here leaves it to the next build
    os.rename(target, old)
    try:
        os.rename(built, target)
    except OSError:
        os.rename(old, target)
        raise
    return old


def _leftovers(target: Path) -> list[Path]:
    """Hidden work directories of builds killed outright (SIGKILL), oldest name first.

    Matched by prefix, not glob: a name like `run[1]` or `b*` must not match another bundle's.
    They may hold run outputs a killed rebuild was moving: they are carried, never removed whole.
    """
    prefix = f".{target.name}{_BUILDING}"
    return sorted(p for p in target.parent.iterdir()
                  if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink())


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `directory` (the target's parent): one build there at a time.

    The directory itself, not a lock file: nothing is left beside the bundle, and no lock file can
    be removed under a waiting build. Where the file system has no flock, builds go unlocked.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another build in {printable(str(directory))} to finish", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EINVAL, errno.EBADF, errno.EOPNOTSUPP):
                raise
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_files(built: Path, files: Mapping[PurePosixPath, bytes], executable: frozenset[str]) -> None:
    # The manifest first: a killed build's directory then always says which files are generated.
    for name, data in sorted(files.items(), key=lambda item: (str(item[0]) != MANIFEST, item[0])):
        path = built.joinpath(*name.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if str(name) in executable else 0o644)
    for directory in [built, *(p for p in built.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)  # not the umask's choice: bundles are identical everywhere


def write_tree(files: Mapping[str, bytes], target: Path, executable: frozenset[str] = frozenset()) -> Carried:
    """Write `files` (relative POSIX path -> content) as the directory `target`, atomically.

    What the old bundle holds besides the files its manifest lists (run outputs, the user's files)
    is carried into the new one, as are the contents of leftovers of killed builds; a generated
    file the user edited is kept under `kept-by-rebuild/`. Returns what was carried.

    Raises:
        UnsafePath: if a name is absolute or climbs out with `..`; nothing is written then.
        OSError: when writing or moving fails; the old bundle is then as it was.
    """
    checked = {_check(name): data for name, data in files.items()}
    target = target.resolve()  # a symlinked bundle directory: build and swap beside what it points to
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        leftovers = _leftovers(target)
        built = Path(tempfile.mkdtemp(prefix=f".{target.name}{_BUILDING}", dir=target.parent))
        journal = Journal()
        try:
            _write_files(built, checked, executable)
            if target.is_dir():
                carry(target, built, journal, live=True)
            for leftover in leftovers:
                carry(leftover, built, journal, live=False)
            old = _swap_in(built, target)
        except BaseException as exc:
            try:
                undo(journal)
            except OSError as undo_failed:  # what could not be put back stays in `built` for the next build
                raise OSError(f"{exc}; putting the bundle's files back failed too ({undo_failed}): they are in "
                              f"{built}, and the next build moves them in") from exc
            clear(built)
            raise
        for duplicate in journal.duplicates:
            os.unlink(duplicate)
        for tree in (*([old] if old else []), *leftovers):
            _sweep(tree, target, journal)
    return journal.carried


def _sweep(tree: Path, target: Path, journal: Journal) -> None:
    """Clear a swapped-out or leftover tree; what a running job wrote into it meanwhile moves on in.

    A job writing under the bundle's path during the build (a checkpoint directory made between
    the move and the swap) lands in the old tree. Failing that move, it stays for the next build.
    """
    if clear(tree):
        return
    late = Journal(carried=journal.carried)
    try:
        carry(tree, target, late, live=False)
    except OSError:
        return
    clear(tree)
