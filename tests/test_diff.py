from __future__ import annotations

import io
import json
import subprocess
import sys

import attrs
import pytest
from conftest import ROOT, SPECS
from rich.console import Console

from olmo2spec.cli import main
from olmo2spec.compiler import check
from olmo2spec.diff import ABSENT, diff_plans, render_diff
from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import Plan


def _rows(a: Plan, b: Plan) -> dict[str, tuple[str, str]]:
    return {path: (va, vb) for path, va, vb in diff_plans(a, b)}


def test_a_plan_equals_itself(plans: dict[str, Plan]) -> None:
    for plan in plans.values():
        assert diff_plans(plan, plan) == []


def test_7b_vs_13b(plans: dict[str, Plan]) -> None:
    rows = _rows(plans["7b"], plans["13b"])
    assert rows["model.d_model"] == ("4,096", "5,120")
    assert rows["stages.pretrain.batch_size"] == ("1,024", "2,048")  # stages matched by name, not position
    assert rows["stages.pretrain.lr.peak"] == ("0.0003", "0.0009")
    assert rows["stages.anneal.kind"] == ("anneal", ABSENT)
    assert rows["stages.anneal-300b.kind"] == (ABSENT, "anneal")
    assert rows["stages.anneal-100b.runs.anneal-100b-seed1110.seed"] == (ABSENT, "1,110")
    assert "model.norm" not in rows and "stages.soup.kind" not in rows
    assert not [path for path in rows if path.startswith("olmo2spec_version")]


def test_rows_follow_a_then_new_keys_of_b(plans: dict[str, Plan]) -> None:
    rows = diff_plans(plans["7b"], plans["13b"])
    only_b = [i for i, (_path, va, _vb) in enumerate(rows) if va == ABSENT]
    assert only_b and only_b == list(range(only_b[0], len(rows)))
    assert rows[0][0] == "recipe.name"
    assert [r[0] for r in rows] == [r[0] for r in diff_plans(plans["7b"], plans["13b"])]


@pytest.mark.parametrize("spec", ["1b", "tiny"])  # anneals that inherit their start (7B's is the release's)
def test_an_override_shows_only_what_it_changes(plans: dict[str, Plan], spec: str) -> None:
    changed = check(SPECS / f"{spec}.toml", ["stages.pretrain.lr.peak=5e-4"]).plan
    rows = _rows(plans[spec], changed)
    assert rows["stages.pretrain.lr.peak"][1] == "0.0005"
    assert {"stages.pretrain.lr.end", "stages.pretrain.lr.lr_at_stop", "stages.anneal.lr.peak"} <= set(rows)
    # Nothing but learning rates: the stop value flows into the stages that inherit it, nowhere else.
    assert all(path.endswith(("lr.peak", "lr.end", "lr.lr_at_stop")) for path in rows), rows


def test_mix_rows_are_matched_by_source(plans: dict[str, Plan]) -> None:
    changed = check(SPECS / "tiny.toml", ["sources.demo-math.tokens=\"1.5M\""]).plan
    rows = _rows(plans["tiny"], changed)
    assert rows["sources.demo-math.tokens"] == ("1,200,000", "1,500,000")
    assert rows["mixes.demo-pretrain.rows.demo-math.source_tokens"] == ("1,200,000", "1,500,000")
    assert "mixes.demo-pretrain.rows.demo-web.source_tokens" not in rows


def test_values_are_formatted_readably(plans: dict[str, Plan]) -> None:
    tiny = plans["tiny"]
    other = attrs.evolve(tiny, cluster=attrs.evolve(tiny.cluster, mfu=0.123456789, gpu="h100-80gb"),
                         checkpoint=attrs.evolve(tiny.checkpoint, async_save=True))
    rows = _rows(tiny, other)
    assert rows["cluster.mfu"] == ("0.3", "0.123457")
    assert rows["cluster.gpu"] == ("cpu", "h100-80gb")
    assert rows["checkpoint.async_save"] == ("false", "true")
    # Values equal to 6 digits are shown in full, never as two equal strings.
    close = attrs.evolve(tiny, cluster=attrs.evolve(tiny.cluster, mfu=0.3000000001))
    assert _rows(tiny, close)["cluster.mfu"] == ("0.3", "0.3000000001")


def test_render_diff() -> None:
    out = io.StringIO()
    render_diff([("model.d_model", "4,096", "5,120"), ("stages.x.tasks", '["a"]', ABSENT)], "a.toml", "b.toml",
                Console(file=out, width=120))
    text = out.getvalue()
    assert "a.toml -> b.toml: 2 differences" in text
    assert "field" in text and "model.d_model" in text and "5,120" in text and '["a"]' in text
    out = io.StringIO()
    render_diff([], "a.toml", "b.toml", Console(file=out, width=120))
    assert out.getvalue().strip() == "no differences"


def test_cli_diff(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(SPECS / "tiny.toml"), str(SPECS / "tiny.toml"), "--exit-code"]) == 0
    assert "no differences" in capsys.readouterr().out
    assert main(["diff", str(SPECS / "tiny.toml"), str(SPECS / "1b.toml"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert ["model.d_model", "128", "2,048"] in rows


def test_cli_diff_exit_code() -> None:
    def run(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "olmo2spec.cli", "diff", *args], cwd=ROOT,
                              capture_output=True, text=True).returncode

    assert run("specs/tiny.toml", "specs/1b.toml") == 0
    assert run("specs/tiny.toml", "specs/1b.toml", "--exit-code") == ExitCode.DIFFERENT
