"""`olmo2spec build`: deterministic bundles, a manifest that checks out, atomic replacement.

Builds run through the real CLI in subprocesses where the working directory or a kill matters,
in-process where a monkeypatch is needed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from olmo2spec import __version__
from olmo2spec.cli import main as cli_main
from olmo2spec.compiler import check
from olmo2spec.emit.bundle import build_bundle, render_bundle
from olmo2spec.emit.write import UnsafePath, write_tree
from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import PLAN_VERSION

BROKEN = ROOT / "tests" / "data" / "broken" / "batch-not-divisible.toml"
PEAK = "stages.pretrain.lr.peak=4e-4"
BUILDING = ".building-"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("OLMO2SPEC_DEBUG", None)
    return env


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olmo2spec.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=60)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _snapshot(root: Path) -> str:
    """One hash of a whole tree: names, kinds, modes and contents."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        kind = "d" if path.is_dir() else "f"
        digest.update(f"{path.relative_to(root).as_posix()}\0{kind}\0{path.stat().st_mode & 0o7777:o}\0".encode())
        if kind == "f":
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if BUILDING in p.name)


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize(("stem", "overrides"), [("13b", []), ("tiny", ["--set", PEAK])], ids=["13b", "tiny-set"])
def test_build_is_deterministic_across_working_directories(tmp_path: Path, stem: str, overrides: list[str]):
    a = tmp_path / "a" / stem
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = _cli("build", f"specs/{stem}.toml", "-o", str(a), *overrides, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    second = _cli("build", str(SPECS / f"{stem}.toml"), "-o", "b", *overrides, cwd=elsewhere)
    assert second.returncode == 0, second.stderr

    tree_a, tree_b = _tree(a), _tree(elsewhere / "b")
    assert sorted(tree_a) == sorted(tree_b)
    different = [name for name in tree_a if tree_a[name] != tree_b[name]]
    assert not different, f"files differ between the two builds: {different}"
    assert tree_a == render_bundle(check(SPECS / f"{stem}.toml", overrides[1::2]), f"{stem}.toml")
    if overrides:  # the override took effect and is recorded
        manifest = json.loads(tree_a["MANIFEST.json"])
        assert manifest["spec"]["overrides"] == [PEAK]
        golden = ROOT / "generated" / stem
        assert tree_a["plan.json"] != (golden / "plan.json").read_bytes()
        assert manifest["spec"]["sha256"] != json.loads((golden / "MANIFEST.json").read_bytes())["spec"]["sha256"]


# --- manifest and paths ------------------------------------------------------------------------


def test_manifest_hashes_every_file_and_names_sources_relatively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "13b"
    assert cli_main(["build", str(SPECS / "13b.toml"), "-o", str(out)]) == 0
    tree = _tree(out)
    manifest = json.loads(tree["MANIFEST.json"])

    assert manifest["olmo2spec_version"] == __version__
    assert manifest["plan_version"] == PLAN_VERSION
    assert sorted(manifest["files"]) == sorted(set(tree) - {"MANIFEST.json"})
    wrong = [name for name, digest in manifest["files"].items()
             if hashlib.sha256(tree[name]).hexdigest() != digest]
    assert not wrong, f"manifest sha256 does not match: {wrong}"

    sources = manifest["spec"]["sources"]
    assert manifest["spec"]["file"] == "13b.toml"
    assert [s["file"] for s in sources] == ["13b.toml", "base/olmo2.toml", "mixes/olmo-mix-1124.toml",
                                            "mixes/dolmino-mix-1124.toml", "posttrain/tulu3.toml",
                                            "posttrain/tulu3-ppo.toml"]
    for source in sources:
        assert hashlib.sha256((SPECS / source["file"]).read_bytes()).hexdigest() == source["sha256"]
    assert manifest["spec"]["overrides"] == []

    leaks = {needle: [name for name, data in tree.items() if needle.encode() in data]
             for needle in {str(tmp_path), str(tmp_path.resolve()), str(ROOT), str(ROOT.resolve())}}
    assert not any(leaks.values()), f"absolute paths in the bundle: {leaks}"


# --- atomicity ---------------------------------------------------------------------------------


def test_failed_build_leaves_the_old_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml")
    before = _snapshot(out)

    real_write_bytes = Path.write_bytes
    written = 0

    def write_bytes_then_fail(self: Path, data: bytes) -> int:
        nonlocal written
        if written == 5:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", str(self))
        written += 1
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes_then_fail)
    status = cli_main(["build", str(SPECS / "tiny.toml"), "-o", str(out), "--set", PEAK])
    monkeypatch.undo()

    assert written == 5
    err = capsys.readouterr().err
    assert status == ExitCode.IO, err  # the machine's problem, not reported as a bug in olmo2spec
    assert "No space left on device (simulated)" in err
    assert "internal error" not in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


KILLABLE = """
import pathlib, sys, time
real_write_bytes = pathlib.Path.write_bytes
def slow_write_bytes(self, data):
    time.sleep(0.3)  # long enough for a second build to start meanwhile, on a loaded machine
    return real_write_bytes(self, data)
pathlib.Path.write_bytes = slow_write_bytes
from olmo2spec.cli import main
sys.exit(main(["build", *sys.argv[1:]]))
"""


def test_killed_build_leaves_the_old_bundle_and_the_next_build_cleans_up(tmp_path: Path):
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml")
    before = _snapshot(out)

    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(SPECS / "tiny.toml"), "-o", str(out), "--set", PEAK],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the slow build ended by itself: {proc.communicate()}"
            assert time.monotonic() < deadline, "no hidden build directory appeared"
            hidden = [p for p in tmp_path.iterdir() if p.name.startswith(f".tiny{BUILDING}")]
            if hidden and sum(p.is_file() for p in hidden[0].rglob("*")) >= 3:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    assert _snapshot(out) == before
    assert len(_hidden(tmp_path)) == 1  # left behind by the kill

    result = _cli("build", str(SPECS / "tiny.toml"), "-o", str(out), "--set", PEAK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _tree(out) == render_bundle(check(SPECS / "tiny.toml", [PEAK]), "tiny.toml")
    assert _snapshot(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_concurrent_builds_of_one_target_both_succeed(tmp_path: Path):
    """The second waits for the first (flock on the parent directory), then rebuilds; neither fails."""
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml")
    slow = subprocess.Popen([sys.executable, "-c", KILLABLE, str(SPECS / "tiny.toml"), "-o", str(out), "--set", PEAK],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.startswith(f".tiny{BUILDING}") for p in tmp_path.iterdir()):
            assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
            time.sleep(0.02)
        fast = _cli("build", str(SPECS / "tiny.toml"), "-o", str(out), cwd=tmp_path)
        _, slow_err = slow.communicate(timeout=120)
    finally:
        slow.kill()
    assert slow.returncode == 0, slow_err
    assert fast.returncode == 0, fast.stderr
    assert f"waiting for another build in {tmp_path} to finish" in fast.stderr
    assert _tree(out) == render_bundle(check(SPECS / "tiny.toml"), "tiny.toml")  # the later build's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_build_replaces_the_generated_files_of_an_existing_bundle(tmp_path: Path):
    """Generated files are replaced or removed; what else is there is kept (tests/emit/test_rebuild.py)."""
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "13b.toml"), out, "13b.toml")
    files = build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml").files
    assert _tree(out) == files
    assert _hidden(tmp_path) == []


def test_stale_build_directories_are_matched_by_name_not_glob(tmp_path: Path):
    """Another bundle's build in progress must survive; only this bundle's stale ones go."""
    mine = tmp_path / ".run[1].building-stale"
    theirs = tmp_path / ".run1.building-inprogress"
    for d in (mine, theirs):
        d.mkdir()
        (d / "plan.json").write_text("{}\n")
    build_bundle(check(SPECS / "tiny.toml"), tmp_path / "run[1]", "tiny.toml")
    assert not mine.exists()
    assert (theirs / "plan.json").is_file()


def test_build_through_a_symlinked_bundle_directory(tmp_path: Path):
    real = tmp_path / "scratch" / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), real, "tiny.toml")
    link = tmp_path / "tiny"
    link.symlink_to(real, target_is_directory=True)
    files = build_bundle(check(SPECS / "tiny.toml", [PEAK]), link, "tiny.toml").files
    assert link.is_symlink()
    assert _tree(real) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scratch", "tiny"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["tiny"]


# --- nothing outside the output directory ------------------------------------------------------


def test_build_writes_only_the_output_directory(tmp_path: Path):
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "neighbour.txt").write_text("untouched\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = _cli("build", str(SPECS / "tiny.toml"), "-o", str(parent / "tiny"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in parent.iterdir()) == ["neighbour.txt", "tiny"]
    assert (parent / "neighbour.txt").read_text() == "untouched\n"
    assert list(cwd.iterdir()) == []

    result = _cli("build", str(SPECS / "tiny.toml"), cwd=cwd)  # default: generated/<stem> under the cwd
    assert result.returncode == 0, result.stderr
    assert [p.name for p in cwd.iterdir()] == ["generated"]
    assert [p.name for p in (cwd / "generated").iterdir()] == ["tiny"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "a/../b", "./x", "a//b", "", "."])
def test_write_tree_refuses_names_outside_the_bundle(tmp_path: Path, name: str):
    target = tmp_path / "parent" / "bundle"
    with pytest.raises(UnsafePath):
        write_tree({"ok.txt": b"fine\n", name: b"escape\n"}, target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["directory", "file", "cwd"])
def test_build_refuses_to_replace_what_is_not_a_bundle(tmp_path: Path, kind: str):
    """`-o .` or a typo must not swap away a directory of the user's work."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("precious\n")
    if kind == "file":
        out, cwd = work / "keep.txt", tmp_path
    elif kind == "directory":
        out, cwd = work, tmp_path
    else:
        out, cwd = Path("."), work
    before = _snapshot(tmp_path)
    result = _cli("build", str(SPECS / "tiny.toml"), "-o", str(out), cwd=cwd)
    assert result.returncode == 74, result.stderr
    assert "not an olmo2spec bundle" in result.stderr
    assert "internal error" not in result.stderr
    assert _snapshot(tmp_path) == before


def test_build_into_an_empty_directory(tmp_path: Path):
    out = tmp_path / "empty"
    out.mkdir()
    files = build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml").files
    assert _tree(out) == files


# --- CLI errors --------------------------------------------------------------------------------


def test_build_of_a_broken_spec_exits_2_and_writes_nothing(tmp_path: Path):
    result = _cli("build", str(BROKEN), "-o", str(tmp_path / "out" / "bundle"), cwd=tmp_path)
    assert result.returncode == 2
    assert "error[E030]: stages.pretrain.batch_size" in result.stderr
    assert re.search(r"\n1 error, \d+ warnings?\n", result.stderr), result.stderr
    assert "built" not in result.stdout
    result = _cli("build", str(BROKEN), cwd=tmp_path)  # default output: generated/<stem>
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("output", "message"), [
    ("", "error: build -o needs the bundle's directory (got ''); leave -o out for generated/<spec>/"),
    ("-", "error: build -o - : a bundle is a directory, not a stream; give a directory (./- for one named -)"),
])
def test_build_refuses_an_output_that_names_no_directory(tmp_path: Path, output: str, message: str):
    result = _cli("build", str(SPECS / "tiny.toml"), "-o", output, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == message + "\n"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []
