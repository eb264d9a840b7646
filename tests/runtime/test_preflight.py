"""Preflight's disk check: a CHECKPOINT_ROOT it cannot use is a clear failure of the node, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SPECS

from olmo2spec.compiler import check
from olmo2spec.emit.bundle import build_bundle
from olmo2spec.exitcodes import ExitCode
from olmo2spec.runtime.main import main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("preflight")
    build_bundle(check(SPECS / "tiny.toml"), root / "bundle", "tiny.toml")
    return root / "bundle"


def _a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("not a directory")
    return tmp / "file"


def _below_a_file(tmp: Path) -> Path:
    return _a_file(tmp) / "checkpoints"


def _run_dir_is_a_file(tmp: Path) -> Path:
    (tmp / "root").mkdir()
    (tmp / "root" / "pretrain").write_text("not a directory")
    return tmp / "root"


def _not_writable(tmp: Path) -> Path:
    if os.geteuid() == 0:  # root writes through any mode bits; sysfs refuses even root
        return Path("/sys/olmo2spec-preflight-test")
    (tmp / "locked").mkdir(mode=0o555)
    return tmp / "locked"


CASES = {f.__name__.lstrip("_"): f for f in (_a_file, _below_a_file, _run_dir_is_a_file, _not_writable)}


@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_checkpoint_root_fails_preflight_clearly(bundle, tmp_path, monkeypatch, capsys, case):
    root = CASES[case](tmp_path)
    monkeypatch.setenv("CHECKPOINT_ROOT", str(root))
    monkeypatch.delenv("OLMO2SPEC_DEVICE", raising=False)
    assert main(["preflight", "--bundle", str(bundle), "--stage", "pretrain"]) == ExitCode.PREFLIGHT
    err = capsys.readouterr().err
    assert err.startswith("preflight failed on ") and str(root) in err and "CHECKPOINT_ROOT" in err, err
    assert "Traceback" not in err


def test_a_usable_checkpoint_root_passes(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path / "new" / "root"))
    monkeypatch.delenv("OLMO2SPEC_DEVICE", raising=False)
    assert main(["preflight", "--bundle", str(bundle), "--stage", "pretrain"]) == 0
    assert "preflight ok on" in capsys.readouterr().out
    run_dir = tmp_path / "new" / "root" / "pretrain"
    assert run_dir.is_dir() and not any(run_dir.iterdir())  # the probe is gone
