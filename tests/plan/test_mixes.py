"""Mix tables against the paper's Table 13 (Dolmino) and Table 4 (OLMo 2 Mix 1124)."""

from __future__ import annotations

import pytest

# Table 13: Mix % per row of the 50B, 100B and 300B samples.
TABLE_13_MIX_PCT = {
    "dolmino-50b": {"dolmino-dclm": 47.2, "dolmino-flan": 16.6, "dolmino-stackexchange": 2.45,
                    "dolmino-pes2o": 5.85, "dolmino-wiki": 7.11, "dolmino-math": 20.8},
    "dolmino-100b": {"dolmino-dclm": 50.2, "dolmino-flan": 16.7, "dolmino-stackexchange": 2.47,
                     "dolmino-pes2o": 9.52, "dolmino-wiki": 3.57, "dolmino-math": 17.5},
    "dolmino-300b": {"dolmino-dclm": 51.9, "dolmino-flan": 11.3, "dolmino-stackexchange": 1.68,
                     "dolmino-pes2o": 19.4, "dolmino-wiki": 4.86, "dolmino-math": 10.8},
}
# Table 13: Source % (the table's defining column) of the non-math rows.
TABLE_13_SOURCE_PCT = {
    "dolmino-50b": {"dolmino-dclm": 3.23, "dolmino-flan": 50, "dolmino-stackexchange": 100, "dolmino-pes2o": 5.15,
                    "dolmino-wiki": 100},
    "dolmino-100b": {"dolmino-dclm": 6.85, "dolmino-flan": 100, "dolmino-stackexchange": 200, "dolmino-pes2o": 16.7,
                     "dolmino-wiki": 100},
    "dolmino-300b": {"dolmino-dclm": 20.78, "dolmino-flan": 200, "dolmino-stackexchange": 400, "dolmino-pes2o": 100,
                     "dolmino-wiki": 400},
}
NOMINAL_BUDGET = {"dolmino-50b": 50e9, "dolmino-100b": 100e9, "dolmino-300b": 300e9}


def _rows(mix):
    return {row.source: row for row in [*mix.rows, *mix.groups]}


@pytest.mark.parametrize("mix_name", TABLE_13_MIX_PCT)
def test_mix_pct_reproduces_table_13(plans, mix_name):
    rows = _rows(plans["13b"].mixes[mix_name])
    for source, expected in TABLE_13_MIX_PCT[mix_name].items():
        assert rows[source].mix_pct == pytest.approx(expected, abs=0.5), source


@pytest.mark.parametrize("mix_name", TABLE_13_SOURCE_PCT)
def test_source_pct_is_table_13s(plans, mix_name):
    rows = _rows(plans["13b"].mixes[mix_name])
    for source, expected in TABLE_13_SOURCE_PCT[mix_name].items():
        assert rows[source].source_pct == pytest.approx(expected, rel=1e-6), source


@pytest.mark.parametrize("mix_name", NOMINAL_BUDGET)
def test_budget_is_the_nominal_sample_size(plans, mix_name):
    assert plans["13b"].mixes[mix_name].tokens == pytest.approx(NOMINAL_BUDGET[mix_name], rel=0.035)


def test_mix_pct_sums_to_100_and_repeats_follow_source_pct(plans):
    for mix in plans["13b"].mixes.values():
        assert sum(r.mix_pct for r in mix.rows) == pytest.approx(100)
        for r in mix.rows:
            assert r.repeats == pytest.approx(r.source_pct / 100)


def test_pretraining_mix_is_table_4(plans):
    mix = plans["7b"].mixes["olmo-mix-1124"]
    assert mix.tokens == pytest.approx(3.90e12, rel=0.001)
    assert _rows(mix)["dclm"].mix_pct == pytest.approx(95.1, abs=0.1)


def test_mix_pct_mix_derives_source_pct(plans):
    mix = plans["tiny"].mixes["demo-anneal"]
    rows = _rows(mix)
    assert mix.tokens == 1_000_000
    assert rows["demo-math"].tokens == 800_000
    assert rows["demo-math"].source_pct == pytest.approx(100 * 800_000 / 1_200_000)


def test_microanneal_builds_one_mix_per_candidate(plans):
    stage = plans["tiny"].stage("microanneal")
    assert [run.mix for run in stage.runs] == ["microanneal-0", "microanneal-1"]
    rows = _rows(plans["tiny"].mixes["microanneal-0"])
    assert rows["demo-math"].mix_pct == pytest.approx(50.0, abs=0.01)
