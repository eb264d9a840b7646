"""The spike score of section 3, defined once (runtime/spikes.py), without torch."""

from __future__ import annotations

import math

from olmo2spec.runtime.spikes import SpikeScore, spike_flags


def test_a_value_seven_sigmas_from_the_rolling_mean_is_a_spike() -> None:
    series = [1.0, 1.2] * 10 + [5.0, 1.1]  # mean 1.1, std 0.1: 5.0 is 39 sigmas out, 1.1 is at the mean
    assert spike_flags(series, window=1000, sigmas=7) == [False] * 20 + [True, False]


def test_nothing_is_a_spike_before_ten_values_or_when_not_finite() -> None:
    assert spike_flags([1.0] * 3 + [100.0], window=1000, sigmas=7) == [False] * 4
    assert spike_flags([1.0, 1.2] * 10 + [math.nan], window=1000, sigmas=7)[-1] is False


def test_the_score_is_the_share_of_spikes_in_the_window() -> None:
    scorer = SpikeScore(window=30, sigmas=7)
    for value in [1.0, 1.2] * 10 + [5.0] + [1.1] * 9:
        scorer.add(value)
    assert scorer.score == 1 / 30
    for _ in range(30):
        scorer.add(1.1)
    assert scorer.score == 0.0  # the spike left the window
