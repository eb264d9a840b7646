"""`olmo2spec demo-data DIR`: writes only a new, empty or its own directory, all at once, and a rerun writes nothing."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

import olmo2spec.data.demo as demo
from olmo2spec.cli import main
from olmo2spec.exitcodes import ExitCode


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-dir") / "data"
    demo.build_demo_corpus(root, seed=0)
    return root


@pytest.fixture
def corpus(built: Path, tmp_path: Path) -> Path:
    """A copy of a built corpus (mtimes kept), to change freely."""
    root = tmp_path / "data"
    shutil.copytree(built, root)
    return root


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


USERS_FILES = {
    "notes": {"notes.txt": b"my notes"},
    "a shard's name": {"raw/web/web-000.jsonl.gz": b"mine", "raw/web/web-007.jsonl.gz": b"mine too"},
    "another manifest": {"MANIFEST.json": b'{"files": [], "mine": true}\n', "eval/math-dev.jsonl": b"{}\n"},
    "a hostile manifest": {"MANIFEST.json": json.dumps({"seed": 0, "python": "3", "stdlib_files": 1, "sources": {},
                                                        "files": [{"path": "../victim.txt"}]}).encode()},
}


@pytest.mark.parametrize("files", USERS_FILES.values(), ids=USERS_FILES.keys())
def test_refuses_a_non_empty_directory_it_did_not_write(tmp_path: Path, files: dict[str, bytes],
                                                        capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "mine"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (tmp_path / "victim.txt").write_bytes(b"keep")
    before = _tree(tmp_path)

    assert main(["demo-data", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {root} is not empty and holds no demo corpus"), err
    assert "pass a new or empty directory" in err and "Traceback" not in err
    assert _tree(tmp_path) == before


def test_refuses_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    target = tmp_path / "data"
    target.write_bytes(b"mine")
    assert main(["demo-data", str(target)]) == 2
    assert capsys.readouterr().err == (f"error: {target} exists and is not a directory: pass a new or empty "
                                       f"directory for the demo corpus\n")
    assert target.read_bytes() == b"mine"


def _spy_writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    writes: list[Path] = []
    real_open = builtins.open

    def spy_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            writes.append(Path(file))
        return real_open(file, mode, *args, **kwargs)

    def spy(real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            writes.extend(Path(a) for a in args[:2] if isinstance(a, str | os.PathLike))
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy_open)
    for name in ("replace", "rename", "mkdir", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, spy(getattr(os, name)))
    return writes


def test_a_rerun_with_identical_content_writes_nothing(corpus: Path, monkeypatch: pytest.MonkeyPatch):
    """Nothing rewritten, so prepare's resume (which checks raw files' mtimes) still holds."""
    before = _tree(corpus)
    writes = _spy_writes(monkeypatch)
    report = demo.build_demo_corpus(corpus, seed=0)
    monkeypatch.undo()
    assert writes == []
    assert _tree(corpus) == before
    assert report.unchanged and report.seconds < 2
    assert report.source("raw/math").documents > 0  # the table is still there to print
    assert "up to date" in str(report)


def test_a_rebuild_of_its_own_directory_touches_only_its_files(corpus: Path):
    tokens = corpus / "tokens" / "math" / "math-000.npy"  # prepare's output: not the demo corpus's
    tokens.parent.mkdir(parents=True)
    tokens.write_bytes(b"tokens")
    stale = corpus / "raw" / "web" / "web-099.jsonl.gz"  # a shard an earlier build listed, this one does not
    stale.write_bytes(b"stale")
    manifest = json.loads((corpus / "MANIFEST.json").read_bytes())
    manifest["files"].append({"path": "raw/web/web-099.jsonl.gz", "sha256": "0" * 64})
    (corpus / "MANIFEST.json").write_text(json.dumps(manifest))
    killed = corpus.parent / ".data.staging-999999999"  # a build killed midway (no such process): removed
    killed.mkdir()
    (killed / "MANIFEST.json").write_text("{}")
    before = _tree(corpus)

    demo.build_demo_corpus(corpus, seed=1)
    after = _tree(corpus)
    assert tokens.read_bytes() == b"tokens"
    assert not stale.exists()
    assert json.loads((corpus / "MANIFEST.json").read_bytes())["seed"] == 1
    assert after["raw/math/math-000.jsonl.gz"][0] != before["raw/math/math-000.jsonl.gz"][0]
    assert after["raw/web/web-000.jsonl.gz"] == before["raw/web/web-000.jsonl.gz"]  # same bytes: not rewritten
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["data"]  # no staging left beside it


@pytest.mark.parametrize("existing", [False, True], ids=["new directory", "its own corpus"])
def test_a_full_disk_leaves_the_old_corpus_or_nothing(corpus: Path, existing: bool, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]):
    if not existing:
        shutil.rmtree(corpus)
    before = _tree(corpus) if existing else None
    real_write = demo.write_atomic
    calls = []

    def full_disk(path: Path, data: bytes, **options: bool) -> None:
        calls.append(path)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, **options)

    monkeypatch.setattr(demo, "write_atomic", full_disk)
    assert main(["demo-data", str(corpus), "--seed", "1"]) == ExitCode.IO
    assert "No space left on device" in capsys.readouterr().err
    assert len(calls) == 5
    if existing:
        assert _tree(corpus) == before
    else:
        assert not corpus.exists()
    assert sorted(p.name for p in corpus.parent.iterdir()) == (["data"] if existing else [])


def test_an_empty_directory_is_filled_in_place(built: Path, tmp_path: Path):
    """`cd data && olmo2spec demo-data .`: the directory itself stays (a shell is in it), the corpus lands in it."""
    data = tmp_path / "data"
    data.mkdir()
    inode = data.stat().st_ino
    assert main_in(data, ["demo-data", "."]) == 0
    assert data.stat().st_ino == inode
    assert {rel: content for rel, (content, _) in _tree(data).items()} == \
        {rel: content for rel, (content, _) in _tree(built).items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def main_in(directory: Path, args: list[str]) -> int:
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return main(args)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("where", ["MANIFEST.json", "raw/web/web-000.jsonl.gz"])
def test_a_fifo_in_place_of_a_file_is_never_read(corpus: Path, where: str):
    """Reading a FIFO blocks until someone writes to it: the manifest and the files it lists are read
    only when they are regular files."""
    (corpus / where).unlink()
    os.mkfifo(corpus / where)
    result = subprocess.run([sys.executable, "-m", "olmo2spec.cli", "demo-data", str(corpus)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if where == "MANIFEST.json":  # then the directory is not ours: refused, nothing touched
        assert result.returncode == 2 and "holds no demo corpus" in result.stderr, result.stderr
    else:  # ours, but not up to date: rebuilt, the FIFO replaced by the file
        assert result.returncode == 0, result.stderr
        assert (corpus / where).is_file()
