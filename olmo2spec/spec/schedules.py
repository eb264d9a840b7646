"""Learning-rate schedules as recipes write them; `schedule` picks the kind.

The closed forms live in `plan/schedule.py` so that the plan and the trainer share one.
"""

from __future__ import annotations

from typing import Literal

import attrs

from olmo2spec.spec.fields import SpecValueError, doc, non_negative, positive, unit_interval
from olmo2spec.spec.types import Inherit, Tokens

__all__ = ["CosineSchedule", "LinearSchedule", "WsdSchedule", "ConstantSchedule", "Schedule", "SCHEDULES"]


def _positive_or_inherit(_inst: object, _attr: object, value: float | str) -> None:
    if value != "inherit" and not (isinstance(value, float) and value > 0):
        raise SpecValueError(f"a learning rate must be greater than 0 (got {value!r})",
                             "e.g. start = 1e-5, or \"inherit\" to start where the `from` stage stopped")


@attrs.frozen(kw_only=True)
class CosineSchedule:
    """Linear warmup from 0, then cosine to `final` x peak at `horizon`; a stage may stop earlier."""

    schedule: Literal["cosine"] = doc("Schedule kind.")
    peak: float = doc("Learning rate at the end of warmup.", validator=positive)
    warmup_steps: int = doc("Steps of linear warmup from 0 (OLMo 2: 2000).", validator=non_negative)
    horizon: Tokens = doc("Tokens at which the cosine reaches its floor (OLMo 2: 5T; 6.5T for 32B).",
                          validator=positive)
    final: float = doc("Floor as a fraction of peak (OLMo 2: 0.1).", default=0.1, validator=unit_interval)


@attrs.frozen(kw_only=True)
class LinearSchedule:
    """Optional warmup, then linear from `start` to `end` over the stage."""

    schedule: Literal["linear"] = doc("Schedule kind.")
    start: Inherit = doc("Learning rate after warmup, or \"inherit\" to start where the `from` stage "
                         "stopped (mid-training, section 2.3).", validator=_positive_or_inherit)
    end: float = doc("Learning rate at the last step.", default=0.0, validator=non_negative)
    warmup_steps: int = doc("Steps of linear warmup from 0.", default=0, validator=non_negative)
    warmup_ratio: float = doc("Warmup as a share of the stage's steps (post-training).", default=0.0,
                              validator=unit_interval)


@attrs.frozen(kw_only=True)
class WsdSchedule:
    """Warmup, stable at peak, then linear decay to `final` x peak over the last `decay_fraction`."""

    schedule: Literal["wsd"] = doc("Schedule kind.")
    peak: float = doc("Learning rate of the stable phase.", validator=positive)
    warmup_steps: int = doc("Steps of linear warmup from 0.", validator=non_negative)
    decay_fraction: float = doc("Share of the stage spent decaying.", default=0.1, validator=unit_interval)
    final: float = doc("Floor as a fraction of peak.", default=0.0, validator=unit_interval)


@attrs.frozen(kw_only=True)
class ConstantSchedule:
    """Warmup, then a constant learning rate."""

    schedule: Literal["constant"] = doc("Schedule kind.")
    value: float = doc("The learning rate.", validator=positive)
    warmup_steps: int = doc("Steps of linear warmup from 0.", default=0, validator=non_negative)


Schedule = CosineSchedule | LinearSchedule | WsdSchedule | ConstantSchedule
SCHEDULES: dict[str, type] = {
    "cosine": CosineSchedule, "linear": LinearSchedule, "wsd": WsdSchedule, "constant": ConstantSchedule,
}
