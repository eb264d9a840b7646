"""PPO's value model starts from a reward model's checkpoint (its score head included), or from a policy's
trunk with a zero head; its checkpoints are saved beside the policy's and loaded with them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from olmo2spec.runtime.checkpoint import Checkpointer, CheckpointError, step_dir  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.ppo_value import PairedCheckpointer, start_value_model  # noqa: E402
from olmo2spec.runtime.scalar_model import ScalarModel  # noqa: E402

ARGS = ModelArgs(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64, vocab_rows=64, max_seq_len=32,
                 rope_theta=10_000.0)


def _save(model: torch.nn.Module, run_dir: Path, step: int = 0) -> Path:
    with warnings.catch_warnings():  # DCP without a process group
        warnings.simplefilter("ignore")
        Checkpointer(run_dir, keep_last=3, permanent_every=0).save(
            step, model, torch.optim.AdamW(model.parameters()), {"run": run_dir.name}, final=True)
    return step_dir(run_dir, step)


def _value() -> ScalarModel:
    torch.manual_seed(1)
    model = ScalarModel(ARGS)
    model.init_weights()
    return model


def test_from_a_policy_the_trunk_and_a_zero_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = Transformer(ARGS)
    policy.init_weights()
    path = _save(policy, tmp_path / "dpo")
    value = _value()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        said = start_value_model(Checkpointer(tmp_path / "v", keep_last=1, permanent_every=0), value, None, path)
    assert "zero head" in said
    assert torch.equal(value.layers[0].mlp.up_proj.weight, policy.layers[0].mlp.up_proj.weight)
    assert torch.equal(value.score.weight, torch.zeros_like(value.score.weight))
    tokens = torch.randint(0, 64, (2, 5))
    assert torch.equal(value(tokens), torch.zeros(2, 5))  # its first values are 0


def test_from_a_reward_model_its_head_too(tmp_path: Path) -> None:
    reward = _value()
    with torch.no_grad():
        reward.score.weight.fill_(0.5)
    path = _save(reward, tmp_path / "reward")
    value = ScalarModel(ARGS)
    value.init_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        said = start_value_model(Checkpointer(tmp_path / "v", keep_last=1, permanent_every=0), value, path, path)
    assert "reward model" in said
    assert torch.equal(value.score.weight, reward.score.weight)


def test_a_policy_checkpoint_named_as_the_reward_model_is_refused(tmp_path: Path) -> None:
    policy = Transformer(ARGS)
    policy.init_weights()
    path = _save(policy, tmp_path / "dpo")
    with warnings.catch_warnings(), pytest.raises(CheckpointError, match="no score head"):
        warnings.simplefilter("ignore")
        start_value_model(Checkpointer(tmp_path / "v", keep_last=1, permanent_every=0), _value(), path, path)


def test_the_value_model_is_saved_and_loaded_with_the_policy(tmp_path: Path) -> None:
    policy, value = Transformer(ARGS), _value()
    policy.init_weights()
    p_opt, v_opt = torch.optim.AdamW(policy.parameters()), torch.optim.AdamW(value.parameters())
    paired = PairedCheckpointer(Checkpointer(tmp_path / "run", keep_last=3, permanent_every=0),
                                Checkpointer(tmp_path / "run" / "value", keep_last=3, permanent_every=0), value, v_opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paired.save(2, policy, p_opt, {"run": "run"})
        saved = value.score.weight.clone()
        with torch.no_grad():
            value.score.weight.zero_()
        paired.load(step_dir(tmp_path / "run", 2), policy, p_opt)
    assert torch.equal(value.score.weight, saved)
    assert (step_dir(tmp_path / "run" / "value", 2) / "COMPLETE").exists()
