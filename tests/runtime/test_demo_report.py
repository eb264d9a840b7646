"""The demo's table and what it concludes, from evaluation results."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from olmo2spec.runtime.demo_report import render_kinds, render_table, verdicts


def _row(label: str, dev: float, heldout: float) -> dict[str, object]:
    return {"label": label, "demo-heldout-loss": {"code": 1.7, "web": 1.9},
            "demo-math-dev": {"accuracy": dev}, "demo-math-heldout": {"accuracy": heldout}}


def test_the_table_has_one_row_per_model_with_dev_and_heldout_apart():
    table = render_table([_row("pretrained", 0.0, 0.0), _row("soup of 3", 0.25, 0.2)]).splitlines()
    assert table[0].split() == ["model", "loss", "code", "loss", "web", "math", "dev", "%", "math", "held-out", "%"]
    assert table[3].split() == ["soup", "of", "3", "1.700", "1.900", "25.0", "20.0"]


def test_verdicts_say_whether_mid_training_lifts_math_and_how_the_soup_compares():
    rows = [_row("pretrained", 0.0, 0.02), _row("ingredient (seed 1)", 0.1, 0.10),
            _row("ingredient (seed 2)", 0.1, 0.12), _row("soup of 2", 0.1, 0.12)]
    assert verdicts(rows) == ["mid-training: held-out math 2.0% -> 10.0..12.0% (lifted)",
                              "soup: held-out math 12.0% matches the best ingredient's 12.0%"]
    rows[1] = _row("ingredient (seed 1)", 0.0, 0.01)
    assert "NOT lifted by every ingredient" in verdicts(rows)[0]


def test_the_kinds_table_shows_correct_over_n_per_kind():
    rows = [_row("pretrained", 0.0, 0.004), _row("soup of 3", 0.3, 0.3)]
    rows[0]["demo-math-heldout"]["by_kind"] = {"drill": {"correct": 2, "n": 250},
                                               "word_problem": {"correct": 0, "n": 100}}
    rows[1]["demo-math-heldout"]["by_kind"] = {"drill": {"correct": 150, "n": 250}}
    table = render_kinds(rows).splitlines()
    assert table[0].split() == ["demo-math-heldout", "by", "kind", "drill", "word_problem"]
    assert table[2].split() == ["pretrained", "2/250", "0/100"]
    assert table[3].split() == ["soup", "of", "3", "150/250", "-"]
    assert render_kinds([_row("pretrained", 0.0, 0.0)]) == ""
