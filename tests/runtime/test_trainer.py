"""The training loop's contract with the plan: schedule, decay groups, non-finite losses."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from runtime_fixtures import STEPS  # noqa: E402

from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.plan.plan import TrainStagePlan, from_json  # noqa: E402
from olmo2spec.plan.schedule import lr_at  # noqa: E402


def test_the_trainer_uses_the_plans_schedule_at_every_step(bundle, uninterrupted):
    plan = from_json((bundle / "bundle" / "plan.json").read_text())
    stage = plan.stage("pretrain")
    assert isinstance(stage, TrainStagePlan)
    records = [json.loads(line) for line in (uninterrupted / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [lr_at(stage.lr, r["step"] - 1) for r in records]


def test_metrics_hold_what_a_researcher_reads(bundle, uninterrupted):
    records = [json.loads(line) for line in (uninterrupted / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert set(records[0]) == {"step", "tokens", "lr", "loss", "z_loss", "grad_norm", "tokens_per_s", "mfu",
                               "masked_share", "loss_spike_score", "grad_spike_score"}
    assert records[-1]["tokens"] == STEPS * 16 * 256
    assert records[-1]["loss"] < records[0]["loss"] - 1.0  # learning
    assert all(0 < r["z_loss"] < 0.01 for r in records)


def test_no_weight_decay_on_the_embedding():
    from olmo2spec.runtime.model import ModelArgs, Transformer
    from olmo2spec.runtime.optim import build_optimizer
    from olmo2spec.spec.training import OptimizerSpec

    model = Transformer(ModelArgs(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=48, vocab_rows=64,
                                  max_seq_len=16))
    optimizer = build_optimizer(model, OptimizerSpec())
    decay, no_decay = optimizer.param_groups
    assert {id(p) for p in no_decay["params"]} == {id(model.embed_tokens.weight)}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert id(model.norm.weight) in {id(p) for p in decay["params"]}  # OLMo 2 decays norm weights


def test_a_non_finite_loss_stops_the_run_naming_the_step(bundle, tmp_path, monkeypatch, capsys):
    import olmo2spec.runtime.trainer as trainer
    from olmo2spec.runtime.bundle import load_run
    from olmo2spec.runtime.checkpoint import complete_steps

    calls = {"n": 0}
    real = trainer.loss_sums

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        ce, z, n = real(*args, **kwargs)
        calls["n"] += 1
        return (ce * float("nan") if calls["n"] > 10 else ce), z, n  # micro-batches 11+ (step 6 on) are NaN

    monkeypatch.setattr(trainer, "loss_sums", poisoned)
    monkeypatch.setenv("DATA_ROOT", str(bundle / "data"))
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setenv("OLMO2SPEC_DEVICE", "cpu")
    ctx = load_run(bundle / "bundle", "pretrain", None)
    assert trainer.run_train_stage(ctx) == ExitCode.NONFINITE
    out = capsys.readouterr().out
    assert "not finite at step 6" in out and "step-0000004" in out
    assert complete_steps(tmp_path / "pretrain") == [4]  # nothing after the last good step was saved


def test_an_anneal_starts_at_the_lr_the_plan_inherits(bundle, uninterrupted):
    """Section 4.1: the anneal's first step uses the rate pretraining stopped at, then decays linearly to 0."""
    import subprocess
    import sys

    from runtime_fixtures import _env

    plan = from_json((bundle / "bundle" / "plan.json").read_text())
    pretrain, anneal = plan.stage("pretrain"), plan.stage("anneal")
    assert isinstance(pretrain, TrainStagePlan) and isinstance(anneal, TrainStagePlan)
    entry = bundle / "bundle" / "stages" / "04-anneal.py"
    result = subprocess.run([sys.executable, str(entry), "--run-name", "anneal-seed42"],
                            env=_env(bundle, uninterrupted), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "with its optimizer state" in result.stdout
    records = [json.loads(line) for line in
               (uninterrupted / "anneal-seed42" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["lr"] == pretrain.lr.lr_at_stop == anneal.lr.peak
    assert records[-1]["lr"] == lr_at(anneal.lr, anneal.steps - 1) and lr_at(anneal.lr, anneal.steps) == 0.0
