"""The closed-form schedules and the LR an anneal inherits."""

from __future__ import annotations

import math

import pytest

from olmo2spec.plan.schedule import build_schedule, lr_at


def test_cosine_warms_up_from_zero_then_decays_to_the_floor():
    s = build_schedule(kind="cosine", warmup_steps=100, peak=1.0, end=0.1, horizon_steps=1100, stop_step=1100)
    assert lr_at(s, 0) == 0.0
    assert lr_at(s, 50) == pytest.approx(0.5)
    assert lr_at(s, 100) == pytest.approx(1.0)
    assert lr_at(s, 600) == pytest.approx(0.55)  # halfway: (peak + floor) / 2
    assert lr_at(s, 1100) == pytest.approx(0.1)
    assert lr_at(s, 5000) == pytest.approx(0.1)


def test_cosine_matches_the_olmo_core_formula_everywhere():
    s = build_schedule(kind="cosine", warmup_steps=2000, peak=3e-4, end=3e-5, horizon_steps=1_192_093,
                       stop_step=928_646)
    for step in range(2000, 1_192_093, 9973):
        progress = (step - 2000) / (1_192_093 - 2000)
        expected = 3e-5 + (3e-4 - 3e-5) * (1 + math.cos(math.pi * progress)) / 2
        assert lr_at(s, step) == pytest.approx(expected, rel=1e-12)


def test_linear_and_wsd_and_constant():
    lin = build_schedule(kind="linear", warmup_steps=0, peak=2.0, end=0.0, horizon_steps=10, stop_step=10)
    assert [lr_at(lin, i) for i in (0, 5, 10)] == [2.0, 1.0, 0.0]
    wsd = build_schedule(kind="wsd", warmup_steps=2, peak=1.0, end=0.0, horizon_steps=12, stop_step=12,
                         decay_start=8)
    assert [lr_at(wsd, i) for i in (1, 5, 8, 10, 12)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    const = build_schedule(kind="constant", warmup_steps=0, peak=0.3, end=0.3, horizon_steps=5, stop_step=5)
    assert lr_at(const, 4) == 0.3


def test_1b_pretraining_is_truncated_and_the_anneal_inherits_its_lr(plans):
    pretrain, anneal = plans["1b"].stage("pretrain"), plans["1b"].stage("anneal")
    assert pretrain.lr.horizon_steps == round(5e12 / (512 * 4096))
    assert pretrain.steps == 1_907_359 < pretrain.lr.horizon_steps
    assert pretrain.lr.lr_at_stop == pytest.approx(lr_at(pretrain.lr, 1_907_359))
    assert pretrain.lr.lr_at_stop == pytest.approx(0.000074487, rel=1e-4)  # OLMo2-1B-stage2-seed42.yaml's
    assert anneal.lr.peak == pretrain.lr.lr_at_stop
    assert lr_at(anneal.lr, 0) == pretrain.lr.lr_at_stop  # first anneal step
    assert lr_at(anneal.lr, anneal.steps) == 0.0


def test_13b_runs_the_whole_cosine_so_anneals_start_at_the_floor(plans):
    pretrain = plans["13b"].stage("pretrain")
    assert pretrain.steps == pretrain.lr.horizon_steps
    assert plans["13b"].stage("anneal-100b").lr.peak == pytest.approx(9e-5)


def test_anneal_steps_match_the_paper(plans):
    # Section 2.3: 13B's 100B anneals take as many steps as 7B's 50B ones: round(tokens / step) + 10 as the
    # released configs stopped them (stop_at), 11,921 as the 32B's (OLMo-core) did.
    assert plans["13b"].stage("anneal-100b").steps == plans["7b"].stage("anneal").steps == 11_921 + 10
    assert plans["32b"].stage("anneal-100b").steps == 11_921
