"""What a recipe may read, and how deep it may nest: hostile files get a located error, never a hang,
a RecursionError or a read of something that is not a recipe.

Files are made in tmp_path (FIFOs, symlinks to devices, 10,000-deep nesting, a 200-file chain);
the static cases with exact messages are in test_broken_specs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from olmo2spec.compiler import check
from olmo2spec.spec.diagnostics import SpecError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.toml"
MAX_RECIPE_BYTES = 1 << 20


def _errors(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(SpecError) as caught:
        check(path, overrides)
    return [d.render() for d in caught.value.diagnostics]


def _extending(tmp_path: Path, ref: str) -> Path:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'extends = "{os.path.relpath(TINY, tmp_path)}"\ninclude = ["{ref}"]\n')
    return recipe


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: (d / "dir.toml").mkdir(), "dir.toml is a directory"),
    (lambda d: (d / "dev.toml").symlink_to("/dev/zero"), "dev.toml is not a regular file"),
    (lambda d: (d / "big.toml").write_bytes(b"# x\n" * (MAX_RECIPE_BYTES // 4 + 1)), "more than a recipe's"),
    (lambda d: (d / "latin1.toml").write_bytes(b"# caf\xe9\n"), "is not UTF-8 text"),
])
def test_an_include_that_is_not_a_small_text_file_is_refused(tmp_path: Path, make, expected: str) -> None:
    make(tmp_path)
    name = next(p.name for p in tmp_path.iterdir())
    [error, *_] = _errors(_extending(tmp_path, name))
    assert "recipe.toml:2:12: error[E002]: " in error and expected in error


@pytest.mark.parametrize(("ref", "expected"), [
    ("/etc/passwd", "is an absolute path"),
    ("~/secret.toml", "is an absolute path"),
    ("../../README.md", "is not a .toml file"),
])
def test_an_include_outside_the_policy_is_refused_before_reading(tmp_path: Path, ref: str, expected: str) -> None:
    [error, *_] = _errors(_extending(tmp_path, ref))
    assert "error[E002]" in error and expected in error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize("where", ["include", "top"])
def test_a_fifo_neither_hangs_nor_is_read(tmp_path: Path, where: str) -> None:
    """A FIFO with no writer blocks `open` forever, and one with a writer streams without end."""
    os.mkfifo(tmp_path / "fifo.toml")
    recipe = _extending(tmp_path, "fifo.toml") if where == "include" else tmp_path / "fifo.toml"
    code = "import sys\nfrom olmo2spec.cli import main\nsys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "check", str(recipe)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "fifo.toml is not a regular file" in result.stderr and "Traceback" not in result.stderr


DEEP = 10_000


@pytest.mark.parametrize("text", [
    "a = " + "[" * DEEP + "]" * DEEP,
    "a = " + "{ b = " * DEEP + "1" + " }" * DEEP,
    ".".join(["a"] * DEEP) + " = 1",
    "[" + ".".join(["a"] * DEEP) + "]\nb = 1",
], ids=["arrays", "inline-tables", "dotted-key", "table-header"])
def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path, text: str) -> None:
    recipe = tmp_path / "deep.toml"
    recipe.write_text(text + "\n")
    [error, *_] = _errors(recipe)
    assert "deep.toml:1:" in error and "error[E004]: " in error and "nest more than 64 deep" in error


def test_a_long_extends_chain_is_an_error_not_a_recursion_error(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"c{i}.toml").write_text(f'extends = "c{i + 1}.toml"\n' if i < 199 else "x = 1\n")
    [error, *_] = _errors(tmp_path / "c0.toml")
    assert "error[E004]: `extends`/`include` chain of more than 32 files" in error


@pytest.mark.parametrize("override", ["model.dropout=" + "[" * DEEP + "]" * DEEP,
                                      ".".join(["model"] * DEEP) + "=1"], ids=["value", "key"])
def test_deep_overrides_are_an_error(override: str) -> None:
    [error, *_] = _errors(TINY, (override,))
    assert error.startswith("--set:1:1: error[E070]: bad --set: nests more than 64 deep")


def test_the_shipped_recipes_and_test_fragments_keep_within_the_policy() -> None:
    for spec in sorted((ROOT / "specs").glob("*.toml")):
        check(spec)


def test_files_included_many_times_over_are_bounded(tmp_path: Path) -> None:
    """Each of 25 files includes the next one twice: 2**25 reads without a bound on files read."""
    for i in range(25):
        (tmp_path / f"d{i}.toml").write_text(f'include = ["d{i + 1}.toml", "d{i + 1}.toml"]\n')
    (tmp_path / "d25.toml").write_text("x = 1\n")
    errors = _errors(tmp_path / "d0.toml")
    assert len(errors) == 1 and "error[E004]: more than 256 recipe files to read" in errors[0]
