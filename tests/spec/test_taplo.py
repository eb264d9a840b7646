"""The editor schema as Even Better TOML sees it: checked by taplo, the engine behind that extension.

An editor shows one file, not the recipe composed from it: the schema must accept every file as
people write it (fragments, `extends`, stages overridden by name) and mark, on the line
`olmo2spec check` names, the mistakes one file shows (unknown keys, wrong types, bad values).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from olmo2spec.compiler import check
from olmo2spec.spec.diagnostics import Severity, SpecError
from olmo2spec.spec.jsonschema import recipe_schema

BROKEN = ROOT / "tests" / "data" / "broken"
# Broken files whose mistake the file itself shows (a key, a type, one value), so an editor can mark it.
# Left out: missing-required (the key may come from what the file extends) and rules between fields.
VISIBLE_IN_ONE_FILE = [
    "type-bad-share", "type-bad-tokens", "type-bool-for-float", "type-string-for-int", "type-table-for-list",
    "unknown-key-lr", "unknown-key-model", "unknown-key-stage", "unknown-key-top", "unknown-stage-kind",
    "value-bad-enum", "value-negative", "value-out-of-range", "value-stage-name-dotdot",
    "value-stage-name-shell", "value-stage-name-space",
]
# taplo reports each error once per place it marks: "error: MESSAGE", then " ┌─ FILE:LINE:COL".
_ERROR_AT = re.compile(r"^error: (?P<message>.*)\n\s*┌─ .*:(?P<line>\d+):\d+$", re.MULTILINE)

# PyPI taplo is a binary in this Python's scripts directory, which PATH may not list (pyenv, --user).
TAPLO = shutil.which("taplo") or shutil.which("taplo", path=sysconfig.get_path("scripts"))
pytestmark = pytest.mark.skipif(TAPLO is None, reason="taplo is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "olmo2spec.schema.json"
    path.write_text(json.dumps(recipe_schema()), encoding="utf-8")
    return path


def _taplo_errors(schema: Path, toml: Path) -> dict[str, set[int]]:
    """Each error taplo reports, with the lines it marks."""
    assert TAPLO is not None
    result = subprocess.run([TAPLO, "check", "--no-auto-config", "--colors", "never",
                             "--schema", schema.as_uri(), str(toml)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "RUST_LOG": "warn"})
    errors: dict[str, set[int]] = {}
    for m in _ERROR_AT.finditer(result.stdout + result.stderr):
        errors.setdefault(m["message"], set()).add(int(m["line"]))
    assert (result.returncode == 0) == (not errors), result.stderr  # e.g. the schema failed to load
    return errors


def _assert_taplo_marks_what_check_rejects(schema: Path, path: Path) -> None:
    errors = _taplo_errors(schema, path)
    expected = _check_error_lines(path)
    assert errors, f"taplo accepts {path.name}, which check rejects at lines {expected}"
    # No more errors than check finds, each marking a line check names (taplo marks a table's every
    # line for an error of the table, such as an unknown key in it).
    assert len(errors) <= len(expected) and all(lines & set(expected) for lines in errors.values()), (errors, expected)


def _check_error_lines(path: Path) -> list[int]:
    """The line of each error `olmo2spec check` reports in the file."""
    with pytest.raises(SpecError) as info:
        check(path)
    return [d.location.line for d in info.value.diagnostics if d.severity is Severity.ERROR
            and d.location is not None and Path(d.location.file).resolve() == path]


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.toml")), ids=lambda p: str(p.relative_to(SPECS)))
def test_taplo_accepts_every_shipped_file(schema_file: Path, path: Path) -> None:
    assert _taplo_errors(schema_file, path) == {}


@pytest.mark.parametrize("name", VISIBLE_IN_ONE_FILE)
def test_taplo_marks_what_check_rejects_on_its_line(schema_file: Path, name: str) -> None:
    _assert_taplo_marks_what_check_rejects(schema_file, BROKEN / f"{name}.toml")


@pytest.mark.parametrize("path", sorted(BROKEN.rglob("*.toml")), ids=lambda p: str(p.relative_to(BROKEN)))
def test_taplo_marks_only_what_check_rejects(schema_file: Path, path: Path) -> None:
    """Every broken file: what taplo marks (often nothing: rules between fields), check rejects there."""
    errors = _taplo_errors(schema_file, path)
    if errors:
        expected = _check_error_lines(path)
        assert all(lines & set(expected) for lines in errors.values()), (errors, expected)


# Each case's one mistake, in a file extending the tiny recipe: stages as files override them, and names.
MISTAKES = {
    "key of another kind": '[[stages]]\nname = "pretrain"\nkind = "pretrain"\nbeta = 5.0\n',
    "typo in an override by name": '[[stages]]\nname = "pretrain"\nbatch_sise = 16\n',
    "string for a number in an override": '[[stages]]\nname = "pretrain"\nnodes = "2"\n',
    "bad value in an override": '[[stages]]\nname = "pretrain"\nactivation_checkpointing = "some"\n',
    "unknown schedule": '[[stages]]\nname = "pretrain"\nlr = { schedule = "cosin", peak = 1e-3 }\n',
    "typo in a schedule override": '[[stages]]\nname = "pretrain"\nlr = { peek = 1e-3 }\n',
    "a stage without a name": '[[stages]]\nkind = "eval"\nsuite = "demo"\n',
    "a source name": '[sources."Demo Web"]\ntokens = 1000\n',
    "a mix name": '[mixes."mix/1"]\nsource_pct = { demo-web = 100 }\n',
    "a name ending in a newline": '[recipe]\nname = "tiny\\n"\n',
    "a negative seed": '[recipe]\nseed = -1\n',
    "a negative seed in a list": '[[stages]]\nname = "anneal"\nseeds = [42, -7]\n',
    "an mfu of 0": '[cluster]\nmfu = 0.0\n',
    "a negative source %": '[mixes.demo-pretrain]\nsource_pct = { demo-web = -5, demo-code = 100, demo-math = 100 }\n',
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_taplo_marks_mistakes_in_overrides_on_their_line(schema_file: Path, tmp_path: Path, mistake: str) -> None:
    path = tmp_path / "recipe.toml"
    base = os.path.relpath(SPECS / "tiny.toml", path.parent)  # recipes name files relatively (README)
    path.write_text(f"extends = {json.dumps(Path(base).as_posix())}\n\n{MISTAKES[mistake]}",
                    encoding="utf-8")
    _assert_taplo_marks_what_check_rejects(schema_file, path)
