"""RLVR's arithmetic against values computed by hand (written out here), masks and edge cases included."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from olmo2spec.runtime.rl_math import (  # noqa: E402
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    grpo_advantages,
    kl_per_token,
    last_index,
    masked_mean,
    masked_whiten,
    ppo_rewards,
)


def t(*rows):  # type: ignore[no-untyped-def]
    return torch.tensor(rows, dtype=torch.float64)


def close(a, b, tol=1e-6):  # type: ignore[no-untyped-def]
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=tol, rtol=0)


def test_masked_mean_over_all_along_rows_and_of_an_empty_row() -> None:
    x, mask = t([1, 2], [3, 4], [5, 6]), t([1, 0], [1, 1], [0, 0])
    assert masked_mean(x, mask).item() == pytest.approx(8 / 3)
    assert close(masked_mean(x, mask, dim=1), [1.0, 3.5, 0.0])  # no division by zero


def test_whiten_uses_the_masked_entries_only() -> None:
    # mean 2, sample variance ((1)^2 + 0 + (1)^2) / 2 = 1; the padding's 100 is ignored and stays 0
    assert close(masked_whiten(t([1, 2, 3, 100]), t([1, 1, 1, 0])), [-1, 0, 1, 0])


def test_kl_estimators() -> None:
    logps, ref = t([-1.0, -1.5]), t([-1.5, -1.0])  # log-ratios 0.5 and -0.5
    assert close(kl_per_token(logps, ref, "k1"), [0.5, -0.5])
    assert close(kl_per_token(logps, ref, "k2"), [0.125, 0.125])
    # exp(-0.5) - 1 + 0.5 = 0.1065307, exp(0.5) - 1 - 0.5 = 0.1487213
    assert close(kl_per_token(logps, ref, "k3"), [0.1065307, 0.1487213])
    assert close(kl_per_token(ref, ref, "k3"), [0.0, 0.0])
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(logps, ref, "k4")


def test_grpo_advantages_per_group_and_a_group_of_identical_rewards_is_zero() -> None:
    adv = grpo_advantages(t(1, 0, 0, 1, 5, 5, 5, 5), group=4)
    # group 1: mean 0.5, sample std sqrt(4 x 0.25 / 3) = 0.5773503 -> +-0.8660254; group 2: std 0 -> 0, not NaN
    assert close(adv, [0.8660254, -0.8660254, -0.8660254, 0.8660254, 0, 0, 0, 0])
    assert not torch.isnan(adv).any()
    assert close(grpo_advantages(t(3, 7), group=1), [0, 0])  # one sample a prompt: nothing to compare with
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(t(1, 2, 3, 4), group=3)


def test_ppo_rewards_put_the_score_on_the_last_response_token() -> None:
    kl, mask = t([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]), t([1, 1, 1], [1, 1, 0])
    rewards = ppo_rewards(kl, t(10, -10), mask, beta=0.05)
    assert close(rewards, [[-0.005, -0.01, 9.985], [-0.02, -10.025, 0.0]])
    assert last_index(mask).tolist() == [2, 1]


def test_gae_by_hand() -> None:
    # gamma 1, lambda 0.5: deltas 0.1, 0.1, 0.3; A2 = 0.3, A1 = 0.1 + 0.5 x 0.3, A0 = 0.1 + 0.5 x 0.25
    adv, ret = gae(t([0, 0, 1]), t([0.5, 0.6, 0.7]), t([1, 1, 1]), gamma=1.0, lam=0.5)
    assert close(adv, [[0.225, 0.25, 0.3]]) and close(ret, [[0.725, 0.85, 1.0]])


def test_gae_stops_at_the_end_of_a_padded_response() -> None:
    # gamma 0.9, lambda 1; the padding's reward and value (9) change nothing: A1 = 2 - 1, A0 = 0.9 - 1 + 0.9 x 1
    adv, ret = gae(t([0, 2, 9]), t([1, 1, 9]), t([1, 1, 0]), gamma=0.9, lam=1.0)
    assert close(adv, [[0.8, 1.0, 0.0]]) and close(ret, [[1.8, 2.0, 0.0]])


def test_clipped_policy_loss_by_hand() -> None:
    up, down = math.log(1.5), math.log(0.5)  # ratios 1.5 and 0.5, clip 0.2
    logps, old = t(up, up, down, down), t(0, 0, 0, 0)
    loss, clipped = clipped_policy_loss(logps, old, t(2, -2, 2, -2), clip_eps=0.2)
    # A=2, r=1.5: max(-3, -2.4); A=-2, r=1.5: max(3, 2.4); A=2, r=0.5: max(-1, -1.6); A=-2, r=0.5: max(1, 1.6)
    assert close(loss, [-2.4, 3.0, -1.0, 1.6])
    assert clipped.tolist() == [True, False, False, True]


def test_clipped_value_loss_by_hand() -> None:
    # v 1 from old 0.5, clip 0.2 -> 0.7; R 2: max(1, 1.69) / 2; R 0: max(1, 0.49) / 2
    loss, clipped = clipped_value_loss(t(1.0, 1.0), t(0.5, 0.5), t(2.0, 0.0), clip_eps=0.2)
    assert close(loss, [0.845, 0.5])
    assert clipped.tolist() == [True, False]
