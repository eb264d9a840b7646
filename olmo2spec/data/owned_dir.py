"""An output directory a command may write only when it is new, empty, or its own; filled all at once.

A directory is ours when its MANIFEST.json is one the command wrote (the caller says how to tell).
Anything else that is not empty is refused, so no file of the user's is overwritten or deleted.
New contents are built in a staging directory beside the target and moved in only when complete:
a full disk or a kill while building leaves the old contents, or no directory at all. An absent
target is made by one rename; an empty one keeps its inode (a shell may be in it) and gets the
staged entries moved in, the manifest last. In a directory of ours only the files the old and new
manifests list are touched, others (prepare's token files, say) are kept, and a file whose bytes
are unchanged is not rewritten, so its mtime, which prepare's resume checks, stays as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["MANIFEST", "DirectoryError", "claim", "commit", "listed_files", "staging", "up_to_date"]

MANIFEST = "MANIFEST.json"
_MANIFEST_MAX_BYTES = 16 << 20

Manifest = dict[str, Any]


class DirectoryError(Exception):
    """The target is not ours to write: a file, or a non-empty directory without our manifest."""


def _read_manifest(directory: Path) -> Manifest | None:
    path = directory / MANIFEST
    try:  # a regular file of sane size only: a FIFO or a device would block or never end
        if not path.is_file() or path.stat().st_size > _MANIFEST_MAX_BYTES:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def listed_files(manifest: Manifest) -> list[str] | None:
    """The relative paths the manifest's "files" entries name; None when one could point outside."""
    entries = manifest.get("files")
    if not isinstance(entries, list):
        return None
    paths = []
    for entry in entries:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not rel or "\\" in rel:
            return None
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts or "." in parts or rel == MANIFEST:
            return None
        paths.append(rel)
    return paths


def claim(root: Path, is_ours: Callable[[Manifest], bool], what: str) -> Manifest | None:
    """The manifest of our earlier build in `root`; None when `root` is absent or an empty directory.

    Raises:
        DirectoryError: `root` is not a directory, or is one that is not empty and not ours.
    """
    if not root.exists():
        return None
    if not root.is_dir():
        raise DirectoryError(f"{root} exists and is not a directory: pass a new or empty directory for the {what}")
    if not any(root.iterdir()):
        return None
    manifest = _read_manifest(root)
    if manifest is None or not is_ours(manifest) or listed_files(manifest) is None:
        raise DirectoryError(f"{root} is not empty and holds no {what} (no {MANIFEST} of one): "
                             f"not writing there, so that nothing in it is overwritten or deleted; "
                             f"pass a new or empty directory")
    return manifest


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def up_to_date(root: Path, manifest: Manifest, fingerprint: str) -> bool:
    """Whether `root` holds, unchanged, what a build with this fingerprint writes."""
    files = listed_files(manifest)
    if manifest.get("fingerprint") != fingerprint or files is None:
        return False
    try:
        return all((root / rel).is_file() and _sha256(root / rel) == entry.get("sha256")
                   for rel, entry in zip(files, manifest["files"], strict=True))
    except OSError:
        return False


def _staging_name(root: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(root.name)}\.staging-(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def staging(root: Path) -> Iterator[Path]:
    """A new empty directory beside `root` (same file system, so renames are atomic), removed on exit;
    staging directories of earlier builds that were killed are removed first."""
    root.parent.mkdir(parents=True, exist_ok=True)
    pattern = _staging_name(root)
    for leftover in root.parent.iterdir():
        match = pattern.fullmatch(leftover.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(leftover, ignore_errors=True)
    stage = root.parent / f".{root.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _inside(root: Path, path: Path) -> bool:
    """Whether `path` is under `root` once symlinks in its directories are followed."""
    return path.parent.resolve().is_relative_to(root.resolve())


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return (b.is_file() and not b.is_symlink() and a.stat().st_size == b.stat().st_size
                and a.read_bytes() == b.read_bytes())
    except OSError:
        return False


def commit(stage: Path, root: Path, old: Manifest | None) -> None:
    """Move the complete build in `stage` to `root`; `old` is what `claim` returned.

    Raises:
        DirectoryError: a listed file would land outside `root` through a symlinked directory.
    """
    if old is None:
        if not root.is_dir():
            os.rename(stage, root)
            return
        entries = sorted(p.name for p in stage.iterdir() if p.name != MANIFEST)
        for name in [*entries, MANIFEST]:  # the manifest last: until it is there, the directory is not ours
            if (root / name).exists():
                raise DirectoryError(f"{root / name} appeared while the corpus was being built: "
                                     f"not replacing it; rerun into a new or empty directory")
            os.rename(stage / name, root / name)
        return
    new = _read_manifest(stage)
    files = listed_files(new) if new is not None else None
    assert files is not None, "the build wrote a manifest of relative paths"
    gone = [rel for rel in listed_files(old) or [] if rel not in set(files)]
    for rel in [*files, *gone]:
        if not _inside(root, root / rel):
            raise DirectoryError(f"{root / rel} is reached through a symlink out of {root}: not writing there; "
                                 f"remove the link or pass a new directory")
    for rel in files:
        if not _same_bytes(stage / rel, root / rel):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, root / rel)
    for rel in gone:  # an earlier build's files that this one does not write
        (root / rel).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (root / rel).parent.rmdir()  # only when empty
    os.replace(stage / MANIFEST, root / MANIFEST)  # last: a kill before this leaves the old manifest
