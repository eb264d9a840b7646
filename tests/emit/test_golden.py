"""The golden bundles in generated/ are exactly what the compiler builds from specs/ today.

A change to the templates, the view or the plan shows up here as a readable diff of the
bundle files it changes; when it is intended, `just golden` rebuilds them for review.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from olmo2spec.compiler import check
from olmo2spec.emit.bundle import render_bundle

GENERATED = ROOT / "generated"
SPEC_FILES = sorted(SPECS.glob("*.toml"))  # the recipes; fragments live in subdirectories
HINT = "run `just golden`, review the diff, commit"
EXECUTABLE = (".sh", ".sbatch", ".py")
MAX_DIFF_LINES = 80


RUN_OUTPUTS = ("checkpoints/", "logs/", "eval/results/", "kept-by-rebuild/")
"""Where runs of a golden bundle write (as the README's Training section runs generated/tiny): not the build's."""


def _files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(RUN_OUTPUTS)]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in _files(root)}


def _diff(golden_name: str, old: bytes, new: bytes) -> str:
    lines = list(difflib.unified_diff(old.decode(errors="replace").splitlines(keepends=True),
                                      new.decode(errors="replace").splitlines(keepends=True),
                                      fromfile=golden_name, tofile="rebuilt"))
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more diff lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def test_every_spec_has_a_golden_bundle_and_no_other():
    assert SPEC_FILES, "no specs/*.toml found"
    specs = {p.stem for p in SPEC_FILES}
    bundles = {p.name for p in GENERATED.iterdir() if p.is_dir()}
    assert bundles == specs, (f"generated/ holds {sorted(bundles - specs)} without a spec and lacks "
                              f"{sorted(specs - bundles)}; {HINT}")


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.stem)
def test_golden_bundle_is_what_the_compiler_builds(spec: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)  # as `just golden` runs: `olmo2spec build specs/X.toml` from the repo root
    rebuilt = render_bundle(check(Path("specs") / spec.name), spec.name)
    golden_dir = GENERATED / spec.stem
    if not golden_dir.is_dir():
        pytest.fail(f"generated/{spec.stem}/ does not exist; {HINT}", pytrace=False)
    golden = _tree(golden_dir)

    problems = []
    missing = sorted(rebuilt.keys() - golden.keys())
    extra = sorted(golden.keys() - rebuilt.keys())
    if missing:
        problems.append(f"missing from generated/{spec.stem}/: {', '.join(missing)}")
    if extra:
        problems.append(f"in generated/{spec.stem}/ but not built: {', '.join(extra)}")
    for name in sorted(rebuilt.keys() & golden.keys()):
        if rebuilt[name] != golden[name]:
            problems.append(_diff(f"generated/{spec.stem}/{name}", golden[name], rebuilt[name]))
    if problems:
        pytest.fail("\n".join([*problems, HINT]), pytrace=False)


@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.stem)
def test_golden_file_modes(spec: Path):
    """Scripts executable, the rest not (git records only the executable bit, so that is all we check)."""
    golden_dir = GENERATED / spec.stem
    wrong = []
    for path in _files(golden_dir):
        want = path.name.endswith(EXECUTABLE)
        if os.access(path, os.X_OK) != want:
            wrong.append(f"{path.relative_to(ROOT)} should {'' if want else 'not '}be executable")
    if wrong:
        pytest.fail("\n".join([*wrong, HINT]), pytrace=False)
