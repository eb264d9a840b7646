"""One table of exit statuses: the README shows it, the launchers use only its codes, and a test makes each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

from olmo2spec import cli
from olmo2spec.exitcodes import MEANINGS, ExitCode, markdown_table

# The test that makes each status through a real failure path: adding a status means adding its test.
MADE_BY = {
    ExitCode.OK: ("tests/runtime/test_preflight.py", "test_a_usable_checkpoint_root_passes"),
    ExitCode.DIFFERENT: ("tests/test_diff.py", "test_cli_diff_exit_code"),
    ExitCode.USAGE: ("tests/test_cli_hostile.py", "test_demo_report_names_a_bundle_without_a_plan"),
    ExitCode.PREFLIGHT: ("tests/runtime/test_preflight.py", "test_an_unusable_checkpoint_root_fails_preflight_clearly"),
    ExitCode.NOT_RUNNABLE: ("tests/test_cli_hostile.py", "test_demo_report_without_torch_says_what_to_install"),
    ExitCode.NONFINITE: ("tests/runtime/test_trainer.py", "test_a_non_finite_loss_stops_the_run_naming_the_step"),
    ExitCode.DATA: ("tests/data/test_prepare.py", "test_runtime_reports_expected_problems_without_a_traceback"),
    ExitCode.CHECKPOINT: ("tests/runtime/test_checkpoint_integrity.py",
                          "test_a_run_whose_latest_step_is_damaged_stops_and_says_which_step_to_resume_from"),
    ExitCode.INTERNAL: ("tests/test_exitcodes.py", "test_a_bug_and_ctrl_c_have_their_own_statuses"),
    ExitCode.IO: ("tests/emit/test_build.py", "test_failed_build_leaves_the_old_bundle"),
    ExitCode.INTERRUPTED: ("tests/test_exitcodes.py", "test_a_bug_and_ctrl_c_have_their_own_statuses"),
    ExitCode.READER_GONE: ("tests/test_cli_hostile.py", "test_a_closed_pipe_exits_quietly"),
}


def test_every_status_has_a_meaning_and_its_own_number():
    assert set(MEANINGS) == set(ExitCode)
    assert len({int(code) for code in ExitCode}) == len(ExitCode)  # no aliases


def test_the_readme_shows_the_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README.md: paste olmo2spec.exitcodes.markdown_table() over its table"


@pytest.mark.parametrize("code", list(ExitCode), ids=[c.name for c in ExitCode])
def test_each_status_is_made_by_a_test_of_a_real_failure(code: ExitCode):
    path, name = MADE_BY[code]
    text = (ROOT / path).read_text(encoding="utf-8")
    start = text.index(f"def {name}(")
    body = text[start:text.find("\ndef ", start + 1)]
    assert code is ExitCode.OK or f"ExitCode.{code.name}" in body, f"{path}::{name} does not check {code.name}"


def test_the_launchers_exit_only_with_statuses_of_the_table():
    templates = sorted((ROOT / "olmo2spec" / "emit" / "templates").glob("*.j2"))
    codes = {int(m) for t in templates for m in re.findall(r"\bexit (\d+)", t.read_text(encoding="utf-8"))}
    assert codes and codes <= {ExitCode.OK, ExitCode.USAGE}  # usage errors, before anything runs


def test_a_bug_and_ctrl_c_have_their_own_statuses(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path):
    def bug(_args: object) -> int:
        raise ZeroDivisionError("simulated")

    def ctrl_c(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_schema", bug)
    assert cli.main(["schema"]) == ExitCode.INTERNAL
    assert "internal error: ZeroDivisionError: simulated" in capsys.readouterr().err
    monkeypatch.setattr(cli, "cmd_schema", ctrl_c)
    assert cli.main(["schema"]) == ExitCode.INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
