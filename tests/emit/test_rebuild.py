"""Rebuilding a bundle keeps what runs and people put in it: checkpoints, logs, results, own files.

The runs of a bundle live inside it by default (`checkpoints/`, `logs/`, `eval/results/`); a
rebuild after editing the recipe must carry all of it into the new tree, keep a generated file the
user edited under `kept-by-rebuild/`, and lose nothing when it fails or is killed at any instant.
Kills are simulated in a forked child that `os._exit`s at the N-th file system step of the build,
for every N: no `finally` runs, as with SIGKILL.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from conftest import SPECS, beyond_not_runnable

from olmo2spec.cli import main as cli_main
from olmo2spec.compiler import Checked, check
from olmo2spec.emit import carry, write
from olmo2spec.emit.bundle import build_bundle, render_bundle

PEAK = "stages.pretrain.lr.peak=4e-4"
EDITED = "launch/local.sh"
KEPT = "kept-by-rebuild"

# What a user's runs leave in a tiny bundle: a sealed checkpoint step, one killed midway, metrics,
# SLURM logs, OLMES results next to the generated eval/olmes.sh, and files of the user's own.
RUN_FILES = {
    "checkpoints/pretrain/step-000004/__0_0.distcp": os.urandom(4096),
    "checkpoints/pretrain/step-000004/__1_0.distcp": os.urandom(4096),
    "checkpoints/pretrain/step-000004/.metadata": os.urandom(512),
    "checkpoints/pretrain/step-000004/CHECKSUMS.json": b'{"__0_0.distcp": "..."}\n',
    "checkpoints/pretrain/step-000004/COMPLETE": b'{"step": 4}\n',
    "checkpoints/pretrain/step-000008/__0_0.distcp": os.urandom(100),  # a save killed midway: no COMPLETE
    "checkpoints/pretrain/metrics.jsonl": b'{"step": 2, "loss": 10.5}\n',
    "checkpoints/prepare/prepare-report.json": b"{}\n",
    "logs/olmo2-tiny-pretrain-1234.out": b"step 4 loss 10.1\n",
    "eval/results/eval-base/soup/dev/metrics.json": b'{"acc": 0.5}\n',
    "notes.txt": b"my notes\n",
    "launch/slurm/99-mine.sbatch": b"#!/bin/bash\n",
}


def _populate(bundle: Path) -> dict[str, bytes]:
    """Add the runs and the user's files to `bundle`, edit one generated file; what must survive."""
    for name, data in RUN_FILES.items():
        path = bundle / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (bundle / "checkpoints" / "pretrain" / "step-000004").chmod(0o700)  # modes are the user's
    (bundle / "latest").symlink_to("checkpoints/pretrain/step-000004")
    edited = (bundle / EDITED).read_bytes() + b"export MY_VAR=1\n"
    (bundle / EDITED).write_bytes(edited)
    return {**RUN_FILES, f"{KEPT}/{EDITED}": edited}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _beside(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name)


def _assert_rebuilt(out: Path, kept: dict[str, bytes], generated: dict[str, bytes]) -> None:
    tree = _tree(out)
    assert {name: tree.get(name) for name in kept} == kept
    assert {name: tree.get(name) for name in generated} == generated
    assert sorted(tree) == sorted({*kept, *generated})
    assert os.readlink(out / "latest") == "checkpoints/pretrain/step-000004"
    assert stat.S_IMODE((out / "checkpoints" / "pretrain" / "step-000004").stat().st_mode) == 0o700


def test_rebuild_keeps_runs_user_files_and_edits(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml")
    kept = _populate(out)

    assert cli_main(["build", str(SPECS / "tiny.toml"), "-o", str(out), "--set", PEAK]) == 0
    _assert_rebuilt(out, kept, render_bundle(check(SPECS / "tiny.toml", [PEAK]), "tiny.toml"))
    assert _beside(out) == []
    err = capsys.readouterr().err
    assert f"warning: {EDITED} was edited since the last build: your version is kept as {KEPT}/{EDITED}" in err

    # a second rebuild keeps them again, and the kept edit is a file like any other of the user's
    assert cli_main(["build", str(SPECS / "tiny.toml"), "-o", str(out)]) == 0
    _assert_rebuilt(out, kept, render_bundle(check(SPECS / "tiny.toml"), "tiny.toml"))
    assert "warning" not in beyond_not_runnable(capsys.readouterr().err)


def test_rebuild_keeps_them_without_renameat2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Where the system cannot exchange two directories (macOS), the two-rename swap keeps them too."""
    monkeypatch.setattr(write, "_exchange", lambda a, b: False)
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml")
    kept = _populate(out)
    build_bundle(check(SPECS / "tiny.toml", [PEAK]), out, "tiny.toml")
    _assert_rebuilt(out, kept, render_bundle(check(SPECS / "tiny.toml", [PEAK]), "tiny.toml"))
    assert _beside(out) == []


def test_rebuild_drops_only_generated_files(tmp_path: Path):
    """Files the old build generated and the new one does not (13b's stages) go; nothing else."""
    out = tmp_path / "bundle"
    build_bundle(check(SPECS / "13b.toml"), out, "13b.toml")
    (out / "logs").mkdir()
    (out / "logs" / "job.out").write_text("log\n")
    files = build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml").files
    assert _tree(out) == {**files, "logs/job.out": b"log\n"}
    assert _beside(out) == []


def test_a_user_file_where_the_new_build_writes_is_kept_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "b"
    write.write_tree(_with_manifest({"a.txt": b"a\n"}), out)
    (out / "b.txt").write_bytes(b"mine\n")
    (out / "dir").mkdir()
    (out / "dir" / "x").write_bytes(b"mine too\n")
    carried = write.write_tree(_with_manifest({"a.txt": b"a\n", "b.txt": b"generated\n", "dir": b"a file\n"}), out)
    assert _tree(out) == {**_with_manifest({"a.txt": b"a\n", "b.txt": b"generated\n", "dir": b"a file\n"}),
                          f"{KEPT}/b.txt": b"mine\n", f"{KEPT}/dir/x": b"mine too\n"}
    assert sorted(carried.kept) == [("b.txt", f"{KEPT}/b.txt"), ("dir", f"{KEPT}/dir")]


def _with_manifest(files: dict[str, bytes]) -> dict[str, bytes]:
    listing = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return {**files, carry.MANIFEST: json.dumps({"files": listing}).encode()}


def test_a_hand_edited_manifest_cannot_reach_outside(tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious\n")
    out = tmp_path / "b"
    write.write_tree(_with_manifest({"a.txt": b"a\n"}), out)
    (out / carry.MANIFEST).write_text(json.dumps({"files": {"../outside.txt": "x", "/etc/passwd": "y"}}))
    write.write_tree(_with_manifest({"a.txt": b"a\n"}), out)
    assert outside.read_bytes() == b"precious\n"
    assert _tree(out)[f"{KEPT}/a.txt"] == b"a\n"  # no longer listed: kept as the user's


# --- failures and kills ------------------------------------------------------------------------


@functools.cache
def _checked(*overrides: str) -> Checked:
    return check(SPECS / "tiny.toml", list(overrides))


def _rebuild_setup(tmp_path: Path) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    out = tmp_path / "tiny"
    build_bundle(_checked(), out, "tiny.toml")
    kept = _populate(out)
    return out, kept, render_bundle(_checked(PEAK), "tiny.toml")


def test_a_failed_move_puts_everything_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out, _, _ = _rebuild_setup(tmp_path)
    before = _tree(out)
    real_rename = os.rename
    calls = 0

    def rename_then_fail(src: object, dst: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise PermissionError(13, "Permission denied (simulated)", str(src))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(carry.os, "rename", rename_then_fail)
    with pytest.raises(carry.CarryError, match=r"cannot move launch/slurm/99-mine\.sbatch .*simulated"):
        build_bundle(check(SPECS / "tiny.toml", [PEAK]), out, "tiny.toml")
    monkeypatch.undo()
    assert calls == 4 + 3  # the failed fourth move, then the first three undone
    assert _tree(out) == before
    assert os.readlink(out / "latest") == "checkpoints/pretrain/step-000004"
    assert _beside(out) == []


def test_an_immovable_directory_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]):
    """`logs/` on another file system (a mount point): exit 74 naming it and the fix, the bundle as it was."""
    out, _, _ = _rebuild_setup(tmp_path)
    before = _tree(out)
    real_rename = os.rename

    def no_cross_device(src: object, dst: object) -> None:
        if Path(str(src)).name == "logs":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(carry.os, "rename", no_cross_device)
    assert cli_main(["build", str(SPECS / "tiny.toml"), "-o", str(out), "--set", PEAK]) == 74
    monkeypatch.undo()
    assert beyond_not_runnable(capsys.readouterr().err) == (
        "error: cannot move logs into the rebuilt bundle (Invalid cross-device link); the old bundle is unchanged: "
        "make logs movable (not a mount point, its directory writable) or move it out of the bundle, then rebuild\n")
    assert _tree(out) == before
    assert _beside(out) == []


def _steps(tmp_path: Path) -> int:
    """How many file system steps a rebuild takes (counted on a copy)."""
    out, _, _ = _rebuild_setup(tmp_path / "count")
    counter = _StepCounter(crash_at=None)
    with counter.installed():
        build_bundle(_checked(PEAK), out, "tiny.toml")
    return counter.count


class _StepCounter:
    """Counts the file system calls of a build, and ends the process at the N-th (a SIGKILL there)."""

    CALLS = ("rename", "unlink", "rmdir", "mkdir", "replace")

    def __init__(self, crash_at: int | None) -> None:
        self.count = 0
        self.crash_at = crash_at

    def installed(self):  # type: ignore[no-untyped-def]
        import contextlib

        counter = self

        @contextlib.contextmanager
        def patched():  # type: ignore[no-untyped-def]
            real = {name: getattr(os, name) for name in self.CALLS}
            real_write = Path.write_bytes
            real_exchange = write._exchange

            def wrap(fn):  # type: ignore[no-untyped-def]
                def step(*args, **kwargs):  # type: ignore[no-untyped-def]
                    counter.tick()
                    return fn(*args, **kwargs)
                return step

            try:
                for name, fn in real.items():
                    setattr(os, name, wrap(fn))
                Path.write_bytes = wrap(real_write)  # type: ignore[method-assign]
                write._exchange = wrap(real_exchange)
                yield
            finally:
                for name, fn in real.items():
                    setattr(os, name, fn)
                Path.write_bytes = real_write  # type: ignore[method-assign]
                write._exchange = real_exchange
        return patched()

    def tick(self) -> None:
        if self.count == self.crash_at:
            os._exit(137)
        self.count += 1


def test_a_kill_at_any_step_loses_nothing(tmp_path: Path):
    steps = _steps(tmp_path)
    assert steps > 40
    checked = _checked(PEAK)
    old_generated = render_bundle(_checked(), "tiny.toml")
    for n in range(steps + 1):
        out, kept, new_generated = _rebuild_setup(tmp_path / str(n))
        pid = os.fork()
        if pid == 0:  # the child builds and is killed at step n
            try:
                with _StepCounter(crash_at=n).installed():
                    build_bundle(checked, out, "tiny.toml")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == (137 if n < steps else 0), n

        # the bundle is whole, old or new: every file its manifest lists is there, as listed
        tree = _tree(out)
        manifest = json.loads(tree[carry.MANIFEST])
        assert all(hashlib.sha256(tree.get(name, b"")).hexdigest() == digest
                   for name, digest in manifest["files"].items() if name != EDITED), n
        assert tree[EDITED] in (old_generated[EDITED] + b"export MY_VAR=1\n", new_generated[EDITED])

        # and the next build finds everything, wherever the kill left it
        build_bundle(checked, out, "tiny.toml")
        _assert_rebuilt(out, kept, new_generated)
        assert _beside(out) == [], n


def test_what_a_running_job_writes_during_the_rebuild_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A checkpoint made under the bundle's path between the moves and the swap lands in the old tree."""
    out, kept, new_generated = _rebuild_setup(tmp_path)
    real_swap = write._swap_in

    def job_writes_then_swap(built: Path, target: Path) -> Path | None:
        late = target / "checkpoints" / "pretrain" / "step-000012"  # `checkpoints/` has moved already
        late.mkdir(parents=True)
        (late / "COMPLETE").write_bytes(b"{}\n")
        return real_swap(built, target)

    monkeypatch.setattr(write, "_swap_in", job_writes_then_swap)
    build_bundle(_checked(PEAK), out, "tiny.toml")
    _assert_rebuilt(out, {**kept, "checkpoints/pretrain/step-000012/COMPLETE": b"{}\n"}, new_generated)
    assert _beside(out) == []


def test_a_leftover_is_never_deleted_with_run_outputs_in_it(tmp_path: Path):
    """A hidden build directory beside the bundle holding a checkpoint (how a kill leaves it): carried."""
    out = tmp_path / "tiny"
    build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml")
    leftover = tmp_path / ".tiny.building-killed"
    (leftover / "checkpoints" / "run").mkdir(parents=True)
    (leftover / "checkpoints" / "run" / "COMPLETE").write_bytes(b"{}\n")
    files = build_bundle(check(SPECS / "tiny.toml"), out, "tiny.toml").files
    assert _tree(out) == {**files, "checkpoints/run/COMPLETE": b"{}\n"}
    assert _beside(out) == []
