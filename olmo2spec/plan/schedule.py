"""Learning-rate schedules in closed form: the plan prints them, the trainer calls them.

One function, `lr_at`, evaluates every kind, so the numbers `olmo2spec explain` shows are the
numbers a run uses (OLMo-core's CosWithWarmup / LinearWithWarmup / WSD conventions).
"""

from __future__ import annotations

import math

import attrs

__all__ = ["LrSchedule", "lr_at"]


@attrs.frozen(kw_only=True)
class LrSchedule:
    """A resolved schedule: every breakpoint in steps, every rate absolute."""

    kind: str
    """'cosine', 'linear', 'wsd' or 'constant'."""
    warmup_steps: int
    """Linear warmup from 0 over these steps."""
    peak: float
    """Rate at the end of warmup (a linear schedule's start)."""
    end: float
    """Rate at `horizon_steps` (cosine floor, linear end, wsd final)."""
    horizon_steps: int
    """Step at which the schedule reaches `end`; a cosine run may stop before it (truncation)."""
    decay_start: int
    """wsd: the step the decay begins; other kinds: equal to warmup_steps."""
    stop_step: int
    """Steps the stage runs."""
    lr_at_stop: float
    """Rate the schedule reached where the stage stopped; what a following anneal inherits."""


def lr_at(s: LrSchedule, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based)."""
    if step < s.warmup_steps:
        return s.peak * step / s.warmup_steps
    if s.kind == "constant":
        return s.peak
    if step >= s.horizon_steps:
        return s.end
    if s.kind == "cosine":
        progress = (step - s.warmup_steps) / (s.horizon_steps - s.warmup_steps)
        return s.end + (s.peak - s.end) * (1 + math.cos(math.pi * progress)) / 2
    if s.kind == "linear" or (s.kind == "wsd" and step >= s.decay_start):
        start = s.warmup_steps if s.kind == "linear" else s.decay_start
        progress = (step - start) / (s.horizon_steps - start)
        return s.peak + (s.end - s.peak) * progress
    return s.peak  # wsd, stable phase


def build_schedule(*, kind: str, warmup_steps: int, peak: float, end: float, horizon_steps: int,
                   stop_step: int, decay_start: int | None = None) -> LrSchedule:
    """A schedule with `lr_at_stop` filled in from the closed form."""
    partial = LrSchedule(kind=kind, warmup_steps=warmup_steps, peak=peak, end=end, horizon_steps=horizon_steps,
                         decay_start=warmup_steps if decay_start is None else decay_start,
                         stop_step=stop_step, lr_at_stop=0.0)
    return attrs.evolve(partial, lr_at_stop=lr_at(partial, stop_step))
