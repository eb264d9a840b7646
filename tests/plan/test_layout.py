"""Parallel layout, memory estimates, and the section 6.5 estimates."""

from __future__ import annotations

import pytest

from olmo2spec.plan.counts import count_params
from olmo2spec.plan.memory import estimate_memory


def test_batch_is_split_into_ranks_micro_batches_and_accumulation(plans):
    for plan in plans.values():
        for stage in plan.stages:
            par = getattr(stage, "parallel", None)
            if par is None or stage.kind == "rlvr":
                continue
            sequences = stage.batch_size * (2 if stage.kind in ("dpo", "reward") else 1)  # pairs: chosen and rejected
            assert par.gpus * par.micro_batch * par.grad_accum == sequences, stage.name
            assert par.shard_gpus * par.replicate == par.gpus


def test_every_stage_fits_its_gpu(plans):
    for plan in plans.values():
        for stage in plan.stages:
            memory = getattr(stage, "memory", None)
            if memory is not None:
                assert memory.total_gib <= memory.capacity_gib, stage.name


def test_32b_needs_shard_groups_larger_than_a_node(plans):
    # 16 bytes of state per parameter over 8 GPUs is 60 GiB before activations.
    assert plans["32b"].stage("pretrain").parallel.shard_gpus >= 8
    assert plans["32b"].stage("pretrain").memory.total_gib <= 79.1


def test_activation_checkpointing_shrinks_activations():
    from conftest import SPECS

    from olmo2spec.compiler import check

    recipe = check(SPECS / "7b.toml").recipe
    counts = count_params(recipe.model, recipe.tokenizer)
    from olmo2spec.spec.hardware import GPUS

    kwargs = dict(model=recipe.model, counts=counts, gpu=GPUS["h100-80gb"], seq_len=4096, micro_batch=1,
                  shard_gpus=8, vocab_rows=100_352)
    full = estimate_memory(checkpointing=False, **kwargs)
    ac = estimate_memory(checkpointing=True, **kwargs)
    assert ac.activations_gib < full.activations_gib / 10
    assert ac.params_gib == full.params_gib == pytest.approx(counts.total * 4 / 8 / 2**30)


def test_cpu_recipe_runs_gloo_in_fp32(plans):
    par = plans["tiny"].stage("pretrain").parallel
    assert (par.backend, par.mixed_precision, par.gpus) == ("gloo", "fp32", 2)
    assert plans["7b"].stage("pretrain").parallel.backend == "nccl"


def test_energy_co2_and_water_reproduce_table_19(plans):
    # Table 19: GPU power (MWh), emissions (tCO2eq), water (kL) of pretraining.
    for size, (mwh, co2, water) in {"7b": (131, 52, 202), "13b": (257, 101, 892)}.items():
        cost = plans[size].stage("pretrain").cost
        assert cost.gpu_energy_kwh / 1000 == pytest.approx(mwh, rel=0.02)
        assert cost.co2_kg / 1000 == pytest.approx(co2, rel=0.02)
        assert cost.water_l / 1000 == pytest.approx(water, rel=0.02)
