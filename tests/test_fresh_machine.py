"""A fresh machine: pip's console scripts may not be on PATH (pyenv before 2.6.8 until a rehash,
`pip install --user` without ~/.local/bin), so nothing the README, the justfile or a bundle runs may
call one; `python3 -m just` finds rust-just's binary for this Python."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT

# The console scripts of olmo2spec and of the tools the justfile runs (all have a `-m` form).
CONSOLE_SCRIPTS = ("olmo2spec", "torchrun", "pytest", "ruff", "mypy", "taplo")
# Words that run the command after them; the word a command starts with follows these and assignments.
_PREFIXES = {"then", "do", "else", "exec", "run", "srun", "xargs", "env", "time", "!"}
_SEGMENTS = re.compile(r"[;&|(`]|\$\(")


def _command_word(segment: str) -> str | None:
    for word in segment.split():
        if word not in _PREFIXES and not re.fullmatch(r"\w+=\S*", word):
            return word
    return None


def _bare_calls(lines: list[str]) -> list[str]:
    calls = []
    for line in lines:
        code = "" if line.lstrip().startswith("#") else line
        if any(_command_word(segment) in CONSOLE_SCRIPTS for segment in _SEGMENTS.split(code)):
            calls.append(line.strip())
    return calls


def _recipe_lines(justfile: str) -> list[str]:
    """The commands of every recipe: the indented lines (recipe headers and settings are not)."""
    return [line for line in justfile.splitlines() if line.startswith((" ", "\t"))]


def test_the_justfile_calls_no_console_script():
    calls = _bare_calls(_recipe_lines((ROOT / "justfile").read_text(encoding="utf-8")))
    assert calls == [], "use `{{python}} -m ...`: a console script may not be on PATH: " + repr(calls)


def test_the_bundle_launchers_call_no_console_script():
    templates = sorted((ROOT / "olmo2spec" / "emit" / "templates").glob("*.j2"))
    calls = {t.name: _bare_calls(t.read_text(encoding="utf-8").splitlines())
             for t in templates if not t.name.startswith("README")}
    assert {name: c for name, c in calls.items() if c} == {}


def test_the_scanner_sees_a_bare_call():
    assert _bare_calls(["    olmo2spec check specs/*.toml", "    x=1 && pytest -q", "  run torchrun a"]) == [
        "olmo2spec check specs/*.toml", "x=1 && pytest -q", "run torchrun a"]
    assert _bare_calls(["    {{python}} -m olmo2spec check", '  run "$PYTHON" -m olmo2spec.runtime x',
                        "    # olmo2spec in a comment"]) == []


def _without_console_scripts(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / ".ci" / "no-console-scripts"), *command], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_ci_hides_the_console_scripts():
    result = _without_console_scripts(["bash", "-c", "command -v olmo2spec pytest; python3 -c "
                                       "'import sys; print(sys.executable)'"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable


@pytest.mark.skipif(not (Path(sysconfig.get_path("scripts")) / "just").exists(),
                    reason="rust-just is not installed for this Python (pip install rust-just)")
def test_python_m_just_runs_the_justfile_without_console_scripts_on_path():
    result = _without_console_scripts(["python3", "-m", "just", "--evaluate", "python"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable


_DASH_M = re.compile(r"(?:\{\{python\}\}|\$PYTHON\"?)\s+-m\s+(?P<module>[A-Za-z_][\w.]*)")


def _runnable(module: str) -> bool:
    """What `python -m MODULE` can run: a module, or a package with a __main__."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.submodule_search_locations is None:
        return spec is not None
    return importlib.util.find_spec(module + ".__main__") is not None


def test_every_python_m_the_justfile_and_launchers_run_exists():
    texts = [(ROOT / "justfile").read_text(encoding="utf-8")]
    texts += [t.read_text(encoding="utf-8") for t in (ROOT / "olmo2spec" / "emit" / "templates").glob("*.sh.j2")]
    texts += [(ROOT / "olmo2spec" / "emit" / "templates" / "stage.sbatch.j2").read_text(encoding="utf-8")]
    modules = {m.group("module") for text in texts for m in _DASH_M.finditer(text)} - {"pip"}
    assert "olmo2spec" in modules
    assert sorted(m for m in modules if not _runnable(m)) == []
