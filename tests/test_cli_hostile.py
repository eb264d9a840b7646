"""The CLI under hostile input: no traceback, nothing obeyed that a recipe or a path says, every option checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SPECS, beyond_not_runnable

from olmo2spec.cli import main
from olmo2spec.exitcodes import ExitCode

CLI = [sys.executable, "-m", "olmo2spec.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _run(args: list[str | bytes], **kwargs) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], cwd=ROOT, env=ENV, capture_output=True, timeout=120, **kwargs)


# --- tokenize -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["dolma2", "bytes"])
def test_tokenize_refuses_input_that_is_not_utf8(tokenizer: str):
    result = _run(["tokenize", "--tokenizer", tokenizer, b"ok \xff\xfe"])
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    assert result.stderr.decode() == ("error: cannot encode: the text is not UTF-8 (byte 0xff at character 3): "
                                      "pass UTF-8 text\n")


# --- a reader that went away --------------------------------------------------------------------------------------

PRINTING = {
    "explain": ["explain", "specs/13b.toml"],
    "explain --json": ["explain", "specs/13b.toml", "--json"],
    "check": ["check", "specs/tiny.toml", "specs/13b.toml"],
    "diff": ["diff", "specs/7b.toml", "specs/13b.toml"],
    "schema": ["schema"],
    "tokenize": ["tokenize", "hello"],
}


def _beyond_not_runnable(stderr: bytes) -> list[str]:
    """stderr's lines other than the W301s of the recipes' not-yet-runnable stages and check's "ok" line."""
    return [line for line in beyond_not_runnable(stderr.decode()).splitlines()
            if not (line.startswith("ok: ") and "warnings" in line)]


@pytest.mark.parametrize("args", PRINTING.values(), ids=PRINTING.keys())
def test_a_closed_pipe_exits_quietly(args: list[str]):
    """`olmo2spec explain X | head -1`: the reader is gone; exit as SIGPIPE would (141), nothing on stderr."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe fails with EPIPE
    try:
        result = subprocess.run([*CLI, *args], cwd=ROOT, env=ENV, stdout=write, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write)
    assert _beyond_not_runnable(result.stderr) == []
    assert result.returncode == ExitCode.READER_GONE


@pytest.mark.parametrize("args", PRINTING.values(), ids=PRINTING.keys())
def test_a_closed_stdout_exits_quietly(args: list[str]):
    """`olmo2spec explain X >&- <&-`: nothing to print to; the command still runs, quietly."""
    result = subprocess.run(["bash", "-c", '"$@" >&- <&-', "bash", *CLI, *args], cwd=ROOT, env=ENV,
                            capture_output=True, timeout=120)
    assert _beyond_not_runnable(result.stderr) == []
    assert result.returncode == 0


# --- control characters -------------------------------------------------------------------------------------------

HOSTILE = r"red \u001b[31mX\u0007 \r over \u009b2J \u202eevil \u0000 [bold]markup[/bold] [/oops]"
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _hostile_spec(directory: Path, name: str = "hostile.toml") -> Path:
    spec = directory / name
    tiny = os.path.relpath(SPECS / "tiny.toml", directory)  # recipes name files relatively
    spec.write_text(f'extends = "{tiny}"\n\n[recipe]\nname = "tiny"\ndescription = "{HOSTILE}"\n\n'
                    f'[mixes.hostile]\ndescription = "{HOSTILE}"\nsource_pct = {{ demo-web = 100 }}\n')
    return spec


def test_control_characters_are_shown_escaped_on_every_printing_path(tmp_path: Path):
    spec = _hostile_spec(tmp_path)
    odd_dir = tmp_path / "odd\x1b[2J["
    odd_dir.mkdir()
    odd = _hostile_spec(odd_dir, "b].toml")  # a path with a control character and what rich takes for a closing tag
    missing = tmp_path / "gone\x1b]0;title\x07.toml"
    runs = {
        "explain": _run(["explain", str(spec)]),
        "diff": _run(["diff", str(SPECS / "tiny.toml"), str(odd)]),
        "check ok": _run(["check", str(odd)]),
        "check error": _run(["check", str(missing)]),
        "demo-data error": _run(["demo-data", str(spec)]),
        "tokenize --decode": _run(["tokenize", "--tokenizer", "bytes", "--decode", "27", "91", "50", "74", "10", "65"]),
    }
    for name, result in runs.items():
        out, err = result.stdout.decode(), result.stderr.decode()
        assert "Traceback" not in err, (name, err)
        assert not UNSAFE.search(out) and not UNSAFE.search(err), (name, out, err)
    shown = r"red \x1b[31mX\x07 \r over \x9b2J \u202eevil \x00 [bold]markup[/bold] [/oops]"
    assert shown in runs["explain"].stdout.decode()
    assert runs["diff"].returncode == 0 and r"odd\x1b[2J[/b].toml" in runs["diff"].stdout.decode()
    assert runs["tokenize --decode"].stdout == b"\\x1b[2J\nA\n"  # ids spell an ESC sequence; newlines stay
    assert runs["check error"].returncode == 2 and r"gone\x1b]0;title\x07.toml" in runs["check error"].stderr.decode()


def test_printable_escapes_what_a_terminal_would_obey():
    from olmo2spec.terminal import printable

    assert printable("a\x1b[2Jb\r\n\t\x7f\x85\u2028\u202e\ud800") == r"a\x1b[2Jb\r\n\t\x7f\x85\u2028\u202e\ud800"
    assert printable("line 1\nline 2\r", newlines=True) == "line 1\nline 2\\r"
    assert printable("caf\xe9 \u6f22\u5b57 \U0001f600 /p\udcff") == "caf\xe9 \u6f22\u5b57 \U0001f600 /p\\xff"


# --- options --------------------------------------------------------------------------------------------------------

BAD_OPTIONS = {
    "negative limit": (["demo-report", "generated/tiny", "--limit", "-5"], "--limit: must be a whole number >= 1"),
    "zero limit": (["demo-report", "generated/tiny", "--limit", "0"], "--limit: must be a whole number >= 1"),
    "float limit": (["demo-report", "generated/tiny", "--limit", "1.5"], "--limit: must be a whole number >= 1"),
    "negative seed": (["demo-data", "/nonexistent/x", "--seed", "-1"], "--seed: must be a whole number >= 0"),
    "empty demo-data dir": (["demo-data", ""], "dir: an empty path"),
    "empty report bundle": (["demo-report", ""], "bundle: an empty path"),
    "empty checkpoint": (["export-hf", "", "out"], "CKPT: an empty path"),
    "empty export dir": (["export-hf", "ckpt", ""], "OUT: an empty path"),
    "empty export bundle": (["export-hf", "ckpt", "out", "--bundle", ""], "--bundle: an empty path"),
    "empty check spec": (["check", "specs/tiny.toml", ""], "spec: an empty path"),
    "empty explain spec": (["explain", ""], "spec: an empty path"),
    "empty diff spec": (["diff", "specs/tiny.toml", ""], "b: an empty path"),
}


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_options_are_checked_before_anything_runs(args: list[str], message: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: "), err
    assert f"error: argument {message}" in err, err


# --- runtime failures are not bugs ------------------------------------------------------------------------------------


def test_demo_report_names_a_bundle_without_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    (tmp_path / "bundle").mkdir()
    assert main(["demo-report", str(tmp_path / "bundle")]) == ExitCode.USAGE
    assert capsys.readouterr().err == (f"error: {tmp_path}/bundle/plan.json not found: is {tmp_path}/bundle a bundle "
                                       f"built by `olmo2spec build`?\n")
    (tmp_path / "bundle" / "plan.json").write_text("{not json")
    assert main(["demo-report", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}/bundle/plan.json: ") and "internal error" not in err, err


def test_demo_report_without_torch_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch):
    """A machine without the runtime's packages: not a bug in olmo2spec, an install to do."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    for name in [m for m in sys.modules if m.startswith("olmo2spec.runtime")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    assert main(["demo-report", str(ROOT / "generated" / "tiny")]) == ExitCode.NOT_RUNNABLE
    err = capsys.readouterr().err
    assert err.startswith("error: demo-report needs the runtime's packages (torch): "), err
    assert "internal error" not in err
