"""What a rebuild keeps: everything in the old bundle that its manifest does not list as generated.

Runs live inside a bundle by default (`checkpoints/`, `logs/`, `eval/results/`), next to whatever
the user adds. A rebuild moves all of it into the new tree before that is swapped in, one rename
per item, as high up as possible (a directory holding no generated file moves whole). Where the
new build writes a file of the same name, the user's goes under `kept-by-rebuild/` instead. A
generated file the user edited is copied there, not moved, so the old bundle stays complete until
the swap. Every move and copy is journalled, so a failure puts everything back.

Manifest names are only compared with what is found in the tree, never opened: a hand-edited
manifest cannot make a build touch anything outside the bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

import attrs

__all__ = ["MANIFEST", "KEPT", "CarryError", "Carried", "Journal", "generated", "carry", "undo", "clear"]

MANIFEST = "MANIFEST.json"
KEPT = "kept-by-rebuild"
"""Where a file of the user's goes when the new build writes one of the same name."""


class CarryError(OSError):
    """Something of the user's could not be moved into the new bundle; everything was put back."""

    def __str__(self) -> str:
        return str(self.strerror)


@attrs.define
class Carried:
    """What a rebuild brought over, relative to the bundle."""

    moved: list[str] = attrs.Factory(list)
    kept: list[tuple[str, str]] = attrs.Factory(list)
    """(where it was, where it is now) for the user's files set aside under `kept-by-rebuild/`."""
    edited: list[tuple[str, str]] = attrs.Factory(list)
    """(generated file, its copy) for generated files the user had edited."""


@attrs.define
class Journal:
    """Moves and copies made so far, in order, to undo them."""

    moves: list[tuple[Path, Path]] = attrs.Factory(list)
    copies: list[Path] = attrs.Factory(list)
    duplicates: list[Path] = attrs.Factory(list)
    """Files of a killed build's directory already in the new tree, byte for byte: removed after the swap."""
    carried: Carried = attrs.Factory(Carried)


def generated(tree: Path) -> dict[str, str] | None:
    """The files `tree`'s manifest lists (relative name -> sha256); None without a readable manifest."""
    try:
        manifest = json.loads((tree / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return None
    return {name: digest for name, digest in files.items() if isinstance(name, str)}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:  # streamed: an edited file may be anything, of any size
        return hashlib.file_digest(f, "sha256").hexdigest()


def _free(new: Path, rel: str) -> bool:
    """Nothing at `new/rel`, and every ancestor that exists is a real directory."""
    path = new / rel
    if os.path.lexists(path):
        return False
    for parent in path.relative_to(new).parents:
        ancestor = new / parent
        if os.path.lexists(ancestor) and (ancestor.is_symlink() or not ancestor.is_dir()):
            return False
    return True


def _kept_name(new: Path, rel: str) -> str:
    base = rel if rel.startswith(f"{KEPT}/") else f"{KEPT}/{rel}"
    name, n = base, 0
    while not _free(new, name):
        n += 1
        name = f"{base}.{n}"
    return name


def _move(old: Path, new: Path, rel: str, dest: str, journal: Journal) -> None:
    target = new / dest
    if not target.parent.is_dir():
        os.makedirs(target.parent, mode=0o755)
    try:
        os.rename(old / rel, target)
    except OSError as exc:
        raise CarryError(exc.errno, f"cannot move {rel} into the rebuilt bundle ({exc.strerror}); the old bundle is "
                         f"unchanged: make {rel} movable (not a mount point, its directory writable) or move it "
                         "out of the bundle, then rebuild") from exc
    journal.moves.append((old / rel, target))
    if dest == rel:
        journal.carried.moved.append(rel)
    else:
        journal.carried.kept.append((rel, dest))


def _copy_edit(old: Path, new: Path, rel: str, journal: Journal) -> None:
    if _same_file(old / rel, new / rel):
        return  # the new build writes what the user wrote: nothing to keep
    dest = _kept_name(new, rel)
    target = new / dest
    if not target.parent.is_dir():
        os.makedirs(target.parent, mode=0o755)
    journal.copies.append(target)
    shutil.copy2(old / rel, target)  # with its mode and mtime
    journal.carried.edited.append((rel, dest))


def carry(old: Path, new: Path, journal: Journal, *, live: bool) -> None:
    """Move everything of `old` that its manifest does not list into `new` (a complete generated tree).

    `live` is the bundle in use: a listed file that no longer matches its sha256 was edited by the
    user and is copied. Elsewhere (what a killed build left) listed files are the build's own,
    maybe half-written, and stay to be cleared.
    """
    listed = generated(old) or {}
    under = {parent.as_posix() for name in listed for parent in Path(name).parents}
    _carry_dir(old, new, "", listed, under, journal, live)


def _carry_dir(old: Path, new: Path, rel_dir: str, listed: dict[str, str], under: set[str], journal: Journal,
               live: bool) -> None:
    for entry in sorted(os.scandir(old / rel_dir if rel_dir else old), key=lambda e: e.name):
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if entry.is_dir(follow_symlinks=False):
            if rel not in under and _free(new, rel):
                _move(old, new, rel, rel, journal)  # no generated file inside: one rename
            elif rel in under or ((new / rel).is_dir() and not (new / rel).is_symlink()):
                _carry_dir(old, new, rel, listed, under, journal, live)
            else:
                _move(old, new, rel, _kept_name(new, rel), journal)
        elif rel == MANIFEST and entry.is_file(follow_symlinks=False):
            continue
        elif rel in listed and entry.is_file(follow_symlinks=False):
            if live and _sha256(Path(entry.path)) != listed[rel]:
                _copy_edit(old, new, rel, journal)
        elif not live and entry.is_file(follow_symlinks=False) and _same_file(old / rel, new / rel):
            journal.duplicates.append(old / rel)  # a killed rebuild's copy of an edit, made again
        else:
            _move(old, new, rel, rel if _free(new, rel) else _kept_name(new, rel), journal)


def _same_file(a: Path, b: Path) -> bool:
    """`b` is a regular file with `a`'s bytes."""
    if not b.is_file() or b.is_symlink() or a.stat().st_size != b.stat().st_size:
        return False
    return _sha256(a) == _sha256(b)


def undo(journal: Journal) -> None:
    """Put every moved item back and remove the copies, newest first."""
    for source, target in reversed(journal.moves):
        os.rename(target, source)
    journal.moves.clear()
    for copy in journal.copies:
        os.unlink(copy)
    journal.copies.clear()


def clear(tree: Path) -> bool:
    """Remove a tree once it holds only what its manifest lists (the manifest last); True if it is gone.

    Anything else (a file written into the old tree during the build) stays where the next build
    finds and carries it: only listed files are unlinked and only empty directories removed.
    """
    listed = generated(tree) or {}
    for rel in listed:
        path = tree / rel
        if rel != MANIFEST and path.is_file() and not path.is_symlink() and _inside(tree, rel):
            os.unlink(path)
    if (tree / MANIFEST).is_file():
        os.unlink(tree / MANIFEST)
    for directory, _, _ in sorted(os.walk(tree), key=lambda item: -item[0].count(os.sep)):
        with contextlib.suppress(OSError):  # not empty: something of the user's is inside
            os.rmdir(directory)
    return not os.path.lexists(tree)


def _inside(tree: Path, rel: str) -> bool:
    """`rel` names a place in `tree` with no `..` and no link on the way (a hand-edited manifest)."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        return False
    return not any((tree / parent).is_symlink() for parent in PurePosixPath(rel).parents)
