"""`write_atomic`: whole or not at all, links kept, durable on request; `render_grid`: the tables' layout."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from olmo2spec import atomic
from olmo2spec.atomic import write_atomic, write_json_atomic
from olmo2spec.textgrid import render_grid


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "report.json"
    path.write_text("old\n")

    def full_disk(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_link_stays_a_link_and_parents_are_made_on_request(tmp_path: Path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    (tmp_path / "link.txt").symlink_to(target)
    write_atomic(tmp_path / "link.txt", b"new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "a" / "b.json", "{}")
    write_json_atomic(tmp_path / "a" / "b.json", {"z": 1, "a": "é"}, sort_keys=True, parents=True)
    assert (tmp_path / "a" / "b.json").read_text() == '{\n  "a": "\\u00e9",\n  "z": 1\n}\n'


def test_durable_writes_reach_the_disk_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    write_atomic(tmp_path / "COMPLETE", "{}", durable=True)
    write_atomic(tmp_path / "cache.json", "{}")
    assert order == ["fsync", "replace", "replace"]
    assert atomic.temporary_name(tmp_path / "x").name == f".x.tmp-{os.getpid()}"


def test_a_grid_aligns_the_first_column_left_and_the_others_right():
    text = render_grid(["source", "docs", "tokens"], [["web", "1,000", "5"], ["code", "7", "12,345"]],
                       footer=[["total", "1,007", "12,350"]])
    assert text.split("\n") == [
        "source   docs  tokens",
        "------  -----  ------",
        "web     1,000       5",
        "code        7  12,345",
        "------  -----  ------",
        "total   1,007  12,350",
    ]
    assert render_grid(["a", "b"], []) == "a  b\n-  -"
