"""Plan -> bundle: every file of `generated/<spec>/`, rendered in memory, then written at once.

Deterministic by construction: no timestamps, no absolute paths, sorted JSON, fixed float
formats, file modes set explicitly; the manifest hashes every other file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import attrs

from olmo2spec import __version__
from olmo2spec.compiler import Checked
from olmo2spec.emit.render import render
from olmo2spec.emit.view import build_view
from olmo2spec.emit.write import Carried, write_tree
from olmo2spec.plan.mixes import MixPlan
from olmo2spec.plan.plan import PLAN_VERSION, to_json

__all__ = ["Built", "render_bundle", "build_bundle", "check_replaceable", "EXECUTABLE_SUFFIXES"]

EXECUTABLE_SUFFIXES = (".sh", ".sbatch", ".py")


def mix_csv(mix: MixPlan) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source", "source_tokens", "tokens", "source_pct", "mix_pct", "repeats", "row"])
    for kind, rows in (("source", mix.rows), ("group", mix.groups)):
        for r in rows:
            writer.writerow([r.source, r.source_tokens, r.tokens, f"{r.source_pct:.6f}", f"{r.mix_pct:.6f}",
                             f"{r.repeats:.6f}", kind])
    return out.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spec_sources(checked: Checked) -> list[dict[str, str]]:
    """The recipe files, named relative to the main one so that the manifest is the same anywhere."""
    root = checked.composed.paths[0].parent if checked.composed.paths else Path(".")
    return [{"file": Path(os.path.relpath(p, root)).as_posix(), "sha256": _sha256(p.read_bytes())}
            for p in checked.composed.paths]


def _manifest(checked: Checked, files: dict[str, bytes]) -> bytes:
    sources = _spec_sources(checked)
    spec_hash = hashlib.sha256()
    for source in sources:
        spec_hash.update(f"{source['file']}\0{source['sha256']}\n".encode(errors="surrogateescape"))  # any name
    for override in checked.composed.overrides:
        spec_hash.update(f"--set\0{override}\n".encode())
    manifest = {
        "olmo2spec_version": __version__,
        "plan_version": PLAN_VERSION,
        "spec": {"file": sources[0]["file"] if sources else "", "sha256": spec_hash.hexdigest(),
                 "sources": sources, "overrides": list(checked.composed.overrides)},
        "files": {name: _sha256(data) for name, data in sorted(files.items())},
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def render_bundle(checked: Checked, spec_name: str) -> dict[str, bytes]:
    """Every file of the bundle, by relative path."""
    plan = checked.plan
    view = build_view(plan, spec_name, __version__)
    text: dict[str, str] = {"plan.json": to_json(plan), "README.md": render("README.md.j2", view=view)}
    for mix in plan.mixes.values():
        text[f"mixes/{mix.name}.csv"] = mix_csv(mix)
    for job in view.jobs:
        if job.runnable:  # a stage the runtime cannot run gets nothing that could launch it
            text[job.entry] = render("stage_entry.py.j2", view=view, job=job)
            text[job.sbatch] = render("stage.sbatch.j2", view=view, job=job)
    text["launch/local.sh"] = render("local.sh.j2", view=view)
    text["launch/submit.sh"] = render("submit.sh.j2", view=view)
    text["eval/olmes.sh"] = render("olmes.sh.j2", view=view)
    files = {name: content.encode() for name, content in text.items()}
    files["MANIFEST.json"] = _manifest(checked, files)
    return files


def _is_bundle(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / "MANIFEST.json").read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "olmo2spec_version" in manifest


def check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything but a bundle or an empty directory (`-o .` must not wipe a repository).

    Raises:
        FileExistsError: naming `out_dir`.
    """
    if not out_dir.exists():
        return
    if out_dir.is_dir() and (_is_bundle(out_dir) or not any(out_dir.iterdir())):
        return
    raise FileExistsError(f"{out_dir} exists and is not an olmo2spec bundle (no MANIFEST.json): not replacing it; "
                          "choose another output directory, or remove it")


@attrs.frozen
class Built:
    files: dict[str, bytes]
    """The generated files, by relative path."""
    carried: Carried
    """What the old bundle held besides its generated files, now in the new one."""


def build_bundle(checked: Checked, out_dir: Path, spec_name: str) -> Built:
    """Render and write the bundle to `out_dir`, replacing what was there only once all is written.

    Run outputs and the user's files in an old bundle are carried into the new one (emit/carry.py).

    Raises:
        FileExistsError: when `out_dir` holds something other than a bundle; nothing is written then.

    .. versionchanged:: returns `Built` (the files and what was carried over), not the files alone.
    """
    check_replaceable(out_dir)
    files = render_bundle(checked, spec_name)
    executable = frozenset(name for name in files if name.endswith(EXECUTABLE_SUFFIXES))
    return Built(files=files, carried=write_tree(files, out_dir, executable))
