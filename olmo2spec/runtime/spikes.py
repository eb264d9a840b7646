"""The spike score of the OLMo 2 paper (section 3): the share of values in a series at least
`sigmas` (7) standard deviations from the rolling mean of the last `window` (1,000) values.

Defined once, here, without torch: the trainer's bookkeeping thread scores live values with it,
and the run viewer marks the spikes of a finished or running `metrics.jsonl` with it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

__all__ = ["SpikeScore", "spike_flags"]

MIN_HISTORY = 10
"""Values needed in the window before any can count as a spike (a standard deviation of 2 values means little)."""


class SpikeScore:
    """Share of values at least `sigmas` standard deviations from the rolling mean of the last `window`."""

    def __init__(self, window: int, sigmas: float) -> None:
        self.history: deque[float] = deque(maxlen=window)
        self.flags: deque[bool] = deque(maxlen=window)
        self.sigmas = sigmas

    def add(self, value: float) -> bool:
        """Score `value` against the values before it; True when it is a spike."""
        spike = False
        if len(self.history) >= MIN_HISTORY and math.isfinite(value):
            mean = sum(self.history) / len(self.history)
            std = math.sqrt(sum((v - mean) ** 2 for v in self.history) / len(self.history))
            spike = std > 0 and abs(value - mean) >= self.sigmas * std
        self.history.append(value)
        self.flags.append(spike)
        return spike

    @property
    def score(self) -> float:
        return sum(self.flags) / len(self.flags) if self.flags else 0.0


def spike_flags(values: Iterable[float], window: int, sigmas: float) -> list[bool]:
    """Which values of a series are spikes, each judged against the `window` values before it."""
    scorer = SpikeScore(window, sigmas)
    return [scorer.add(value) for value in values]
