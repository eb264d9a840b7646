"""The paper recipes follow the runs that trained the released models (issue 14).

Each value here was read from the released artifacts (allenai/OLMo configs/official-*, allenai/OLMo-core
src/scripts/official/OLMo2, allenai/open-instruct docs/olmo2.md and docs/archived_dev_scripts/olmo2_1124.sh);
where the paper differs, the recipe's [[departures]] says so. Parameter counts and Table 6 FLOPs are pinned
in test_counts.py.
"""

from __future__ import annotations

import pytest

from olmo2spec.plan.plan import PostTrainStagePlan, TrainStagePlan


def _train(plans, size: str, stage: str) -> TrainStagePlan:
    s = plans[size].stage(stage)
    assert isinstance(s, TrainStagePlan)
    return s


def _post(plans, size: str, stage: str) -> PostTrainStagePlan:
    s = plans[size].stage(stage)
    assert isinstance(s, PostTrainStagePlan)
    return s


# -- 1B: OLMo2-1B-stage1.yaml, OLMo2-1B-stage2-seed42.yaml, open-instruct docs/olmo2.md ------------------------
def test_1b_pretraining_as_the_released_stage_1_config(plans) -> None:
    plan = plans["1b"]
    pretrain = _train(plans, "1b", "pretrain")
    assert plan.recipe.seed == 6198
    assert pretrain.optimizer.weight_decay == 0.1  # not OLMo-core's later 0.033
    assert pretrain.lr.warmup_steps == 4000        # 8,388,608,000 tokens of 512 x 4096
    assert pretrain.steps == 1_907_359


def test_1b_anneal_is_seed_42_for_23852_steps_from_the_released_lr(plans) -> None:
    anneal = _train(plans, "1b", "anneal")
    assert [r.seed for r in anneal.runs] == [42]
    assert anneal.steps == 23_852
    assert anneal.lr.peak == pytest.approx(0.000074487, rel=1e-4)  # the stage-2 config's learning_rate


def test_1b_grpo_is_two_stages_as_released(plans) -> None:
    first, math = _post(plans, "1b", "rlvr"), _post(plans, "1b", "rlvr-math")
    assert math.depends_on == ["rlvr"] and math.dataset == "RLVR-MATH"
    assert plans["1b"].stage("eval-instruct").depends_on == ["rlvr-math"]
    assert plans["1b"].stage("export").depends_on == ["rlvr-math"]
    for stage in (first, math):
        h = stage.hyperparameters
        assert (stage.batch_size, h["update_epochs"], h["samples_per_prompt"], h["episodes"]) == (768, 1, 16, 2_000_000)
        assert (h["kl_beta"], h["kl_estimator"], h["no_eos_penalty"]) == (0.01, "k3", 0.0)
        assert stage.lr.peak == stage.lr.end == 5e-7  # constant


# -- 7B: OLMo2-7B-stage1.yaml and OLMo2-7B-stage2-seed*.yaml ---------------------------------------------------
def test_7b_stage_1_as_released(plans) -> None:
    pretrain = _train(plans, "7b", "pretrain")
    assert (plans["7b"].recipe.seed, pretrain.steps, pretrain.lr.warmup_steps) == (6198, 928_646, 2000)
    assert pretrain.optimizer.weight_decay == 0.1


def test_7b_anneals_start_at_the_released_lr_and_run_11931_steps(plans) -> None:
    anneal = _train(plans, "7b", "anneal")
    assert [r.seed for r in anneal.runs] == [42, 42069, 666]
    assert anneal.steps == 11_931
    assert anneal.lr.peak == 0.000061499  # the stage-2 configs', not the cosine's 6.1351e-5
    assert _train(plans, "7b", "pretrain").lr.lr_at_stop == pytest.approx(6.1351e-5, rel=1e-4)


def test_7b_post_training_keeps_the_lineage_table_18_gives(plans) -> None:
    assert _post(plans, "7b", "sft").lr.peak == 2e-5
    assert _post(plans, "7b", "dpo").lr.peak == 1e-6
    rlvr = _post(plans, "7b", "rlvr")
    assert (rlvr.lr.peak, rlvr.batch_size, rlvr.hyperparameters["episodes"], rlvr.hyperparameters["kl_beta"]) == (
        4e-7, 224, 100_000, 0.05)


# -- 13B: OLMo2-13B-stage2-*.yaml, open-instruct docs/archived_dev_scripts/olmo2_1124.sh -----------------------
def test_13b_anneals_run_the_released_steps_from_the_cosine_floor(plans) -> None:
    a100, a300 = _train(plans, "13b", "anneal-100b"), _train(plans, "13b", "anneal-300b")
    assert ([r.seed for r in a100.runs], a100.steps) == ([1110, 2662, 6209], 11_931)
    assert ([r.seed for r in a300.runs], a300.steps) == ([2662], 35_773)
    assert a100.lr.peak == a300.lr.peak == pytest.approx(9e-5)  # the stage-2 configs' learning_rate


def test_13b_sft_batch_is_the_released_64(plans) -> None:
    sft = _post(plans, "13b", "sft")
    assert (sft.batch_size, sft.lr.peak) == (64, 5e-6)
    assert plans["13b"].stage("dpo").depends_on == ["sft"]


def test_13b_rlvr_is_three_chained_ppo_runs_each_with_a_fresh_value_function(plans) -> None:
    chain = [_post(plans, "13b", name) for name in ("rlvr", "rlvr-gsm8k", "rlvr-math")]
    assert [s.init_from for s in chain[1:]] == ["rlvr", "rlvr-gsm8k"]
    assert [s.hyperparameters["kl_beta"] for s in chain] == [0.1, 0.03, 0.1]  # Table 18
    assert [s.hyperparameters["value_from"] for s in chain] == ["reward"] * 3
    assert [s.dataset for s in chain] == ["RLVR-GSM-MATH-IF-Mixed-Constraints", "gsm8k_ground_truth",
                                          "math_ground_truth"]
    assert {(s.batch_size, s.hyperparameters["episodes"], s.lr.peak) for s in chain} == {(248, 200_000, 3e-7)}
    assert plans["13b"].stage("export").depends_on == ["rlvr-math"]


# -- 32B: OLMo-core src/scripts/official/OLMo2/, open-instruct scripts/train/olmo2/finetune_32b.sh ---------------
def test_32b_stage_1_as_the_released_script(plans) -> None:
    pretrain = _train(plans, "32b", "pretrain")
    assert plans["32b"].recipe.seed == 12536  # OLMo-core's init_seed default
    assert [r.seed for r in pretrain.runs] == [34521]
    assert pretrain.steps == 721_901
    assert (pretrain.lr.peak, pretrain.lr.warmup_steps) == (6e-4, 2000)


def test_32b_trains_without_instance_masking(plans) -> None:
    assert [_train(plans, "32b", s).ngram_masking for s in ("pretrain", "anneal-100b", "anneal-300b")] == [False] * 3


def test_32b_soup_is_the_three_released_runs(plans) -> None:
    soup = plans["32b"].stage("soup")
    assert soup.ingredients == ["anneal-100b-seed1110", "anneal-100b-seed2662", "anneal-300b-seed2662"]
    assert (_train(plans, "32b", "anneal-100b").steps, _train(plans, "32b", "anneal-300b").steps) == (11_921, 35_763)


def test_32b_sft_batch_is_the_released_256(plans) -> None:
    assert (_post(plans, "32b", "sft").batch_size, _post(plans, "32b", "sft").lr.peak) == (256, 4e-6)


@pytest.mark.parametrize(("size", "seeds"), [
    ("1b", {"sft": 1, "dpo": 111, "rlvr": 1, "rlvr-math": 1}),                   # open-instruct docs/olmo2.md
    ("13b", {"sft": 1, "dpo": 8, "rlvr": 52, "rlvr-gsm8k": 52, "rlvr-math": 52}),  # archived_dev_scripts/olmo2_1124.sh
])
def test_post_training_seeds_as_released(plans, size: str, seeds: dict[str, int]) -> None:
    assert {name: _post(plans, size, name).seed for name in seeds} == seeds
