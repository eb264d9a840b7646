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


def _instruct(label: str, run: str, kind: str, start: str | None, chat: float, pref: float, reward: float,
              exact: float) -> dict[str, object]:
    row = _row(label, 0.1, 0.1)
    row.update(run=run, kind=kind, instruct={"chat": {"format": chat, "exact": chat / 2},
                                             "preferences": {"accuracy": pref},
                                             "math": {"reward": reward, "exact": exact}})
    if start:
        row["from"] = start
    return row


def test_instruct_rows_gain_the_held_out_post_training_columns():
    rows = [_row("pretrained", 0.0, 0.0), _instruct("soup of 2", "soup", "soup", None, 0.0, 0.6, 0.1, 0.1),
            _instruct("sft", "sft", "sft", "soup", 0.9, 0.7, 0.2, 0.2)]
    table = render_table(rows).splitlines()
    assert table[0].split()[11:] == ["chat", "ok", "%", "chat", "exact", "%", "pref", "acc", "%", "rl", "reward", "%",
                                     "rl", "exact", "%"]
    assert table[2].split()[-5:] == ["-"] * 5
    assert table[4].split()[-5:] == ["90.0", "45.0", "70.0", "20.0", "20.0"]


def test_instruct_verdicts_compare_each_stage_with_the_model_it_starts_from():
    rows = [_instruct("soup of 2", "soup", "soup", None, 0.0, 0.6, 0.1, 0.1),
            _instruct("sft", "sft", "sft", "soup", 0.9, 0.7, 0.2, 0.2),
            _instruct("dpo", "dpo", "dpo", "sft", 0.9, 0.65, 0.2, 0.2),
            _instruct("rlvr (grpo)", "rlvr", "rlvr", "dpo", 0.9, 0.65, 0.4, 0.3)]
    assert verdicts(rows) == [
        "sft over soup of 2, held-out: chat answers parseable 0.0% -> 90.0% (raised)",
        "dpo over sft, held-out: preference accuracy 70.0% -> 65.0% (NOT raised)",
        "rlvr (grpo) over dpo, held-out: math verifier reward 20.0% -> 40.0% (raised); "
        "math exact match 20.0% -> 30.0% (raised)"]
