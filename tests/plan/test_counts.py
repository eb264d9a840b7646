"""Parameter counts and FLOPs against the released models and the paper's Table 6."""

from __future__ import annotations

import pytest

# Parameters of the released checkpoints (sum of every tensor in the safetensors files).
RELEASED_PARAMS = {"1b": 1_484_916_736, "7b": 7_298_617_344, "13b": 13_716_198_400, "32b": 32_234_279_936}
# Table 6 (Table 22 for 1B): training FLOPs, 6ND, in units of 10^23, as printed (one decimal).
TABLE_6_FLOPS = {"1b": 0.4, "7b": 1.8, "13b": 4.6, "32b": 13.0}
# Section 2.3: total training tokens, pretraining plus every mid-training run.
PAPER_TOKENS = {"7b": 4.05e12, "13b": 5.6e12, "32b": 6.6e12}


@pytest.mark.parametrize("size", RELEASED_PARAMS)
def test_parameter_count_matches_release(plans, size):
    assert plans[size].model.params.total == RELEASED_PARAMS[size]


def test_non_embedding_excludes_only_the_input_embedding(plans):
    p = plans["7b"].model.params
    assert p.embedding == 100_352 * 4096
    assert p.non_embedding == p.total - p.embedding
    assert p.output_head == p.embedding  # untied, same shape


def test_head_dim_is_128_at_every_size(plans):
    assert {plans[s].model.head_dim for s in RELEASED_PARAMS} == {128}


@pytest.mark.parametrize("size", TABLE_6_FLOPS)
def test_6nd_flops_agree_with_table_6(plans, size):
    ours = plans[size].estimates.base_flops_6n / 1e23
    # Agree to the printed decimal, or within 1%: 32B's 6.06T + 4 anneals give 12.88 against 13.0.
    assert round(ours, 1) == TABLE_6_FLOPS[size] or ours == pytest.approx(TABLE_6_FLOPS[size], rel=0.01)


@pytest.mark.parametrize("size", PAPER_TOKENS)
def test_total_tokens_agree_with_section_2_3(plans, size):
    assert plans[size].estimates.base_tokens == pytest.approx(PAPER_TOKENS[size], rel=0.01)


def test_flops_with_attention_exceed_6n_by_the_attention_term(plans):
    m = plans["7b"].model
    expected = 6 * m.params.non_embedding + 12 * m.n_layers * m.d_model * 4096
    assert m.flops_per_token == expected
