"""PPO's value function starts from a reward stage: rlvr's own settings carry it, and the DAG orders the two."""

from __future__ import annotations

from pathlib import Path

from olmo2spec.compiler import check
from olmo2spec.plan.plan import PostTrainStagePlan

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _stages(spec: str) -> dict[str, PostTrainStagePlan]:
    plan = check(SPECS / spec).plan
    return {s.name: s for s in plan.stages if isinstance(s, PostTrainStagePlan)}


def test_the_ppo_sizes_train_a_reward_model_from_sft_and_rlvr_waits_for_it():
    for spec in ("7b.toml", "13b.toml"):
        stages = _stages(spec)
        reward, rlvr = stages["reward"], stages["rlvr"]
        assert reward.kind == "reward" and reward.init_from == "sft" and reward.hyperparameters == {}
        # Table 26
        assert (reward.batch_size, reward.max_seq_len, reward.epochs, reward.lr.peak) == (256, 2048, 1, 3e-6)
        assert reward.optimizer.grad_clip == 1.0 and reward.optimizer.eps == 1e-5
        assert rlvr.hyperparameters["value_from"] == "reward" and rlvr.depends_on == ["dpo", "reward"]
        assert "value_init_lr" not in rlvr.hyperparameters
        names = list(stages)
        assert names.index("reward") < names.index("rlvr")
    assert _stages("13b.toml")["reward"].dataset == "olmo-2-1124-13b-preference-mix"


def test_the_grpo_sizes_have_no_reward_model():
    for spec in ("1b.toml", "32b.toml", "tiny.toml"):
        stages = _stages(spec)
        hyper = stages["rlvr"].hyperparameters
        assert hyper["algorithm"] == "grpo" and hyper["value_from"] is None
        assert stages["rlvr"].depends_on == ["dpo"]
    assert "reward" not in _stages("1b.toml") and "reward" not in _stages("32b.toml")
