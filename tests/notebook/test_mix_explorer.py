"""The mix explorer, driven from Python as a user drives it: every number equals `olmo2spec explain`'s
with the same `--set` overrides, every diagnostic `olmo2spec check`'s, and a saved mix round-trips."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from conftest import SPECS

from olmo2spec.cli import main
from olmo2spec.notebook.mixes import MixExplorer, stages_frame


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _sets(overrides: list[str]) -> list[str]:
    return [word for o in overrides for word in ("--set", o)]


def _table_rows(text: str, title: str) -> list[list[str]]:
    """The body rows of the rich table whose title starts with `title`, as cells (rules skipped)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            return rows
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip().strip("│").split("│")])
    raise AssertionError(f"table {title!r} does not end")


def _explain_mix(capsys: pytest.CaptureFixture[str], spec: Path | str, mix: str,
                 overrides: list[str]) -> tuple[str, list[list[str]]]:
    status, out, err = _cli(capsys, "explain", str(spec), *_sets(overrides))
    assert status == 0, err
    title = next(line for line in out.splitlines() if line.startswith(f"Mix {mix}:"))
    return title.strip(), _table_rows(out, f"Mix {mix}:")


def _shown(explorer: MixExplorer) -> list[list[str]]:
    assert explorer.shown is not None
    return [list(row) for row in explorer.shown.iter_rows()]


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


@pytest.fixture
def explorer() -> MixExplorer:
    return MixExplorer(SPECS / "13b.toml")


def test_opens_on_the_anneal_mix_with_explains_table(explorer: MixExplorer, capsys) -> None:
    assert explorer.mix_picker.value == "dolmino-100b"
    assert explorer.edit is not None and explorer.edit.overrides() == []
    title, rows = _explain_mix(capsys, SPECS / "13b.toml", "dolmino-100b", [])
    assert _shown(explorer) == rows
    assert title in _text(explorer.table.value)
    assert "ok:" in _text(explorer.diagnostics.value)


def test_edits_give_explains_numbers_and_stages(explorer: MixExplorer, capsys) -> None:
    explorer.rows["dolmino-flan"].box.value = 90
    explorer.rows["dolmino-stackexchange"].box.value = 300  # "repeats" is ticked: 13b writes it "2x"
    assert explorer.edit is not None
    overrides = explorer.edit.overrides()
    assert overrides == ["mixes.dolmino-100b.source_pct.dolmino-flan=90.0",
                         'mixes.dolmino-100b.source_pct.dolmino-stackexchange="3.0x"']
    title, rows = _explain_mix(capsys, SPECS / "13b.toml", "dolmino-100b", overrides)
    assert _shown(explorer) == rows
    assert title in _text(explorer.table.value)
    bars = explorer.chart.data[0]
    assert list(bars.y) == [r[0] for r in rows[:-1]]  # the sources, not the group's subtotal
    assert [f"{x:.2f}" for x in bars.x] == [r[3] for r in rows[:-1]]  # mix %
    _, out, _ = _cli(capsys, "explain", str(SPECS / "13b.toml"), *_sets(overrides))
    stages = {row[0]: row for row in _table_rows(out, "Stages")}
    assert explorer.outcome is not None and explorer.outcome.checked is not None
    frame = stages_frame(explorer.outcome.checked.plan, "dolmino-100b")
    shown = {row[0]: row for row in frame.iter_rows()}
    assert set(shown) == {"anneal-100b"}
    assert shown["anneal-100b"][3:5] == tuple(stages["anneal-100b"][4:6])  # steps, tokens/run
    assert "Stages that read dolmino-100b" in _text(explorer.stages.value)


def test_a_mix_pct_mix_edits_shares_budget_and_repeats(capsys) -> None:
    explorer = MixExplorer(SPECS / "tiny.toml")
    assert explorer.mix_picker.value == "demo-anneal" and explorer.budget in explorer.sources.children
    explorer.rows["demo-web"].box.value = 30
    explorer.rows["demo-math"].box.value = 70
    explorer.budget.value = "2M"  # 1.4M of math from a smaller source: repeats, undeclared
    assert explorer.outcome is not None and [d.code for d in explorer.outcome.errors] == ["E051"]
    explorer.rows["demo-math"].repeats.value = True  # allow_repeats
    assert explorer.edit is not None and explorer.outcome.ok
    assert explorer.edit.overrides()[-2:] == ['mixes.demo-anneal.allow_repeats=["demo-math"]',
                                              'mixes.demo-anneal.tokens="2M"']
    _, rows = _explain_mix(capsys, SPECS / "tiny.toml", "demo-anneal", explorer.edit.overrides())
    assert _shown(explorer) == rows


@pytest.mark.parametrize(("edit", "code"), [
    (lambda e: setattr(e.rows["dolmino-stackexchange"].repeats, "value", False), "E051"),  # 200% undeclared
    (lambda e: setattr(e.rows["dolmino-dclm"].box, "value", 1.0), "E052"),  # 100B from a mix of ~55B
    (lambda e: setattr(e.rows["dolmino-wiki"].box, "value", -5.0), "E012"),  # not a share at all
])
def test_a_rule_breaking_edit_shows_checks_diagnostics(explorer: MixExplorer, capsys, edit, code) -> None:
    before = _shown(explorer)
    edit(explorer)
    assert explorer.edit is not None and explorer.outcome is not None and not explorer.outcome.ok
    status, _, err = _cli(capsys, "check", str(SPECS / "13b.toml"), *_sets(explorer.edit.overrides()))
    assert status == 2 and f"error[{code}]" in err
    assert _text(explorer.diagnostics.value) == err.strip()
    assert _shown(explorer) == before  # the last table that checked, and it says so
    assert "not updated" in _text(explorer.table.value)
    assert explorer.save() is None and "not saved" in explorer.save_status.value


@pytest.mark.parametrize(("spec", "edit"), [
    ("13b", lambda e: setattr(e.rows["dolmino-math-tulumath"].box, "value", 350)),
    ("tiny", lambda e: (setattr(e.rows["demo-web"].repeats, "value", True), setattr(e.budget, "value", "1.2M"))),
])
def test_saved_mix_checks_and_reproduces_the_table(capsys, tmp_path: Path, spec: str, edit) -> None:
    explorer = MixExplorer(SPECS / f"{spec}.toml")
    edit(explorer)
    assert explorer.outcome is not None and explorer.outcome.ok and explorer.edit is not None
    assert explorer.edit.overrides()
    saved = explorer.save(tmp_path / "edited.toml")
    assert saved is not None and "saved" in explorer.save_status.value
    status, out, err = _cli(capsys, "check", str(saved))
    assert status == 0 and out.startswith("ok:"), err
    _, rows = _explain_mix(capsys, saved, explorer.edit.mix, [])
    assert _shown(explorer) == rows


def test_picking_another_recipe_and_mix(explorer: MixExplorer, capsys) -> None:
    explorer.recipe_picker.value = SPECS / "tiny.toml"
    assert explorer.mix_picker.value == "demo-anneal"
    explorer.mix_picker.value = "demo-pretrain"
    assert set(explorer.rows) == {"demo-web", "demo-code", "demo-math"}
    assert explorer.budget not in explorer.sources.children  # a source % mix has no budget box
    _, rows = _explain_mix(capsys, SPECS / "tiny.toml", "demo-pretrain", [])
    assert _shown(explorer) == rows


def test_a_slider_drag_is_one_edit_of_the_box_and_one_replan(explorer: MixExplorer, monkeypatch, capsys) -> None:
    import olmo2spec.notebook.mixes as mixes

    replans = []
    real = mixes.recheck
    monkeypatch.setattr(mixes, "recheck", lambda *a: replans.append(1) or real(*a))
    row = explorer.rows["dolmino-pes2o"]
    assert row.slider.value == row.box.value and not row.slider.continuous_update  # a drag reports once, at its end
    row.slider.value = 42.5
    assert row.box.value == 42.5 and len(replans) == 1
    assert explorer.edit is not None
    assert explorer.edit.overrides() == ["mixes.dolmino-100b.source_pct.dolmino-pes2o=42.5"]
    _, rows = _explain_mix(capsys, SPECS / "13b.toml", "dolmino-100b", explorer.edit.overrides())
    assert _shown(explorer) == rows


def test_the_box_moves_the_slider_and_a_share_beyond_its_range_keeps_the_box(explorer: MixExplorer) -> None:
    row = explorer.rows["dolmino-stackexchange"]
    row.box.value = 300  # a source used three times widens the slider
    assert (row.slider.max, row.slider.value, row.box.value) == (300, 300, 300)
    row.box.value = -5  # an error the compiler reports: the box keeps what was typed, the slider its end
    assert (row.slider.value, row.box.value) == (0, -5)
    assert explorer.outcome is not None and [d.code for d in explorer.outcome.errors] == ["E012"]
