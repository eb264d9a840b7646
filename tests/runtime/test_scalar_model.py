"""The scalar model: the policy's trunk by the same names, a `score` head, loaded from a policy's or its own steps."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from olmo2spec.runtime.checkpoint import Checkpointer, CheckpointError  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.scalar_model import SCORE, ScalarModel, last_token_scores, load_scalar_model  # noqa: E402

ARGS = ModelArgs(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=96, vocab_rows=128, max_seq_len=32,
                 rope_theta=10_000.0)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*torch.distributed is disabled:UserWarning",
                                         "ignore:.*assuming the intent is to:UserWarning")]


def _model(kind: type, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = kind(ARGS)
    model.init_weights()
    return model


def _save(model: torch.nn.Module, run_dir: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Checkpointer(run_dir, keep_last=2, permanent_every=0).save(
            3, model, torch.optim.AdamW(model.parameters()), {"run": run_dir.name}, final=True)


def _load(path: Path, model: ScalarModel) -> dict:  # type: ignore[type-arg]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_scalar_model(Checkpointer(path.parent, keep_last=2, permanent_every=0), path, model)


def test_the_trunk_has_the_policys_names_and_score_replaces_the_lm_head():
    policy, scalar = set(Transformer(ARGS).state_dict()), set(ScalarModel(ARGS).state_dict())
    assert scalar == (policy - {"lm_head.weight"}) | {SCORE}
    assert ScalarModel(ARGS).score.weight.shape == (1, ARGS.d_model)


def test_a_score_per_token_from_the_same_hidden_states_the_policys_head_reads():
    policy, scalar = _model(Transformer, 0), _model(ScalarModel, 1)
    scalar.load_state_dict(policy.state_dict(), strict=False)  # the trunk
    tokens = torch.randint(0, ARGS.vocab_rows, (3, 10))
    hidden = policy.hidden_states(tokens)
    assert torch.equal(policy(tokens), policy.lm_head(hidden))  # the LM path is the trunk, then its head
    scores = scalar(tokens)
    assert scores.shape == (3, 10) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, (hidden @ scalar.score.weight.T).squeeze(-1), rtol=0, atol=0)


def test_the_score_of_each_rows_last_real_token():
    scores = torch.arange(12.0).view(3, 4)
    assert last_token_scores(scores, torch.tensor([4, 1, 2])).tolist() == [3.0, 4.0, 9.0]


def test_a_fresh_score_is_open_instructs_init():
    wide = ModelArgs(d_model=1023, n_layers=0, n_heads=1, n_kv_heads=1, mlp_hidden=8, vocab_rows=8, max_seq_len=4)
    torch.manual_seed(0)
    model = ScalarModel(wide)
    model.init_weights()
    std = model.score.weight.std().item()
    assert abs(std - 1 / math.sqrt(1024)) < 0.1 / math.sqrt(1024)
    assert model.score.weight.mean().abs().item() < 0.2 / math.sqrt(1024)


def test_from_a_policys_checkpoint_the_trunk_loads_and_score_keeps_its_init(tmp_path):
    policy = _model(Transformer, 0)
    path = _save(policy, tmp_path / "sft")
    scalar = _model(ScalarModel, 1)
    fresh_score = scalar.score.weight.detach().clone()
    marker = _load(path, scalar)
    assert marker["final"] and marker["score_loaded"] is False
    trunk = {k: v for k, v in policy.state_dict().items() if k != "lm_head.weight"}
    for name, value in scalar.state_dict().items():
        assert torch.equal(value, trunk[name] if name != SCORE else fresh_score), name


def test_from_a_reward_models_checkpoint_the_score_loads_too(tmp_path):
    reward = _model(ScalarModel, 2)
    path = _save(reward, tmp_path / "reward")
    value = _model(ScalarModel, 3)
    assert _load(path, value)["score_loaded"] is True
    for name, tensor in reward.state_dict().items():
        assert torch.equal(value.state_dict()[name], tensor), name


def test_a_checkpoint_without_the_trunk_is_refused_naming_the_step(tmp_path):
    other = ModelArgs(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=48, vocab_rows=128, max_seq_len=32)
    torch.manual_seed(0)
    small = Transformer(other)
    small.init_weights()
    path = _save(small, tmp_path / "other")
    with pytest.raises(CheckpointError, match=str(path.name)):
        _load(path, _model(ScalarModel, 0))
