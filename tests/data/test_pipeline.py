"""Raw demo text -> prepare stage -> token files -> the mixture loader, through the bundle."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SPECS

from olmo2spec.compiler import check
from olmo2spec.data.demo import build_demo_corpus
from olmo2spec.data.loader import LoaderError, loader_for_run
from olmo2spec.data.sources import check_declared_counts
from olmo2spec.emit.bundle import build_bundle
from olmo2spec.plan.plan import TrainStagePlan


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    build_demo_corpus(data, seed=0)
    checked = check(SPECS / "tiny.toml")
    build_bundle(checked, root / "bundle", "tiny.toml")
    env = {**os.environ, "DATA_ROOT": str(data), "CHECKPOINT_ROOT": str(root / "ckpt")}
    result = subprocess.run([sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(root / "bundle"),
                             "--stage", "prepare"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return checked.plan, data


def test_prepared_counts_agree_with_the_recipe(prepared):
    plan, data = prepared
    problems = check_declared_counts(plan, data)
    assert [p for p in problems if p.severity.value == "error"] == []


def test_the_loader_realises_the_pretraining_mix_within_one_percent(prepared):
    plan, data = prepared
    stage = plan.stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    loader = loader_for_run(plan, stage, stage.runs[0], data_root=data)
    sources = np.concatenate([loader.batch(step).sources for step in range(stage.steps)])
    planned = {row.source: row.mix_pct / 100 for row in plan.mixes[stage.runs[0].mix].rows}
    for i, name in enumerate(loader.source_names):
        assert float((sources == i).mean()) == pytest.approx(planned[name], abs=0.01), name


def test_every_anneal_ingredient_has_its_own_data_order(prepared):
    plan, data = prepared
    stage = plan.stage("anneal")
    assert isinstance(stage, TrainStagePlan)
    firsts = [loader_for_run(plan, stage, run, data_root=data).batch(0).tokens for run in stage.runs]
    assert len(firsts) == 2 and not np.array_equal(firsts[0], firsts[1])


def test_instances_are_the_prepared_bytes(prepared):
    plan, data = prepared
    stage = plan.stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    tokens = loader_for_run(plan, stage, stage.runs[0], data_root=data).batch(0).tokens
    assert tokens.max() <= 256 and tokens.shape == (16, 256)  # bytes and eos, seq_len columns


def test_a_missing_source_is_a_clear_error(prepared, tmp_path):
    plan, _ = prepared
    stage = plan.stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    with pytest.raises(LoaderError, match=r"has no token files matching .*run the prepare stage"):
        loader_for_run(plan, stage, stage.runs[0], data_root=tmp_path)
