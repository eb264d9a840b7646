"""Field helpers: every spec key carries its documentation, and checks sit next to it.

Validators are attrs validators (`(instance, attribute, value) -> None`), built by small
factories in the style of `attrs.validators`; they look at the value only. `structure.py` runs
each one as its field is structured (attrs' own run, which stops at the first failure, is
switched off), so that every failure is reported, bad types and bad values together.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection
from typing import Any

import attrs

__all__ = [
    "doc", "SpecValueError", "positive", "non_negative", "in_range", "one_of", "safe_name",
    "unit_interval", "each", "SAFE_NAME", "shown", "seed_range", "share_of_one", "MAX_SEED", "finite",
]

SAFE_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
"""Also a JSON Schema pattern (ECMA-262), hence `$`; Python checks it with `fullmatch`, since its `$`
also matches before a trailing newline ("pretrain\\n" would pass `match`)."""
_SAFE_NAME = re.compile(SAFE_NAME)
MAX_SEED = 2**63 - 1
"""The largest seed accepted: torch.manual_seed refuses 2**64 and more at run time; below 2**63 a seed
also fits a signed 64-bit integer, what TOML itself promises."""
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def shown(value: Any) -> str:
    """A value as messages quote it: its repr, cut to 60 characters (a 5,000-character value stays readable)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SpecValueError(ValueError):
    """A value broke a rule; carries the error code and a hint for the fix."""

    def __init__(self, message: str, hint: str = "", code: str = "E013") -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def doc(text: str, *, default: Any = attrs.NOTHING, validator: Validator | list[Validator] | None = None,
        factory: Callable[[], Any] | None = None, key: str | None = None) -> Any:
    """An attrs field with its documentation (shown by `olmo2spec schema`) and checks."""
    metadata = {"doc": text}
    if key is not None:
        metadata["key"] = key  # the TOML key, when it is a Python keyword (`from`)
    if factory is not None:
        return attrs.field(factory=factory, validator=validator, metadata=metadata)
    return attrs.field(default=default, validator=validator, metadata=metadata)


def finite(value: float) -> float:
    """`value` unchanged; NaN and infinities are refused (they reach plan.json as invalid JSON).

    Raises:
        SpecValueError: for NaN, inf or -inf.
    """
    if not math.isfinite(value):
        raise SpecValueError(f"must be a finite number (got {value!r})", "write a number such as 3e-4")
    return value


def positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise SpecValueError(f"must be greater than 0 (got {value!r})")


def non_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise SpecValueError(f"must not be negative (got {value!r})")


def unit_interval(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not 0 <= value <= 1:
        raise SpecValueError(f"must be between 0 and 1 (got {value!r})")


def share_of_one(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A fraction that a figure is divided by (MFU): 0 excluded."""
    if value is not None and not 0 < value <= 1:
        raise SpecValueError(f"must be greater than 0 and at most 1 (got {value!r})",
                             "e.g. 0.4 for 40%")


def seed_range(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not 0 <= value <= MAX_SEED:
        raise SpecValueError(f"a seed must be between 0 and 2**63-1 (got {shown(value)})",
                             "torch.manual_seed and the data loader take seeds below 2**63; e.g. 42")


def in_range(low: float, high: float) -> Validator:
    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not low <= value <= high:
            raise SpecValueError(f"must be between {low:g} and {high:g} (got {value!r})")
    return check


def one_of(choices: Collection[Any]) -> Validator:
    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1) if isinstance(value, str) else []
            raise SpecValueError(f"must be one of {listed} (got {shown(value)})",
                                 f"did you mean {close[0]!r}?" if close else "")
    return check


def safe_name(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """Names reach file names and job names in the bundle, so they stay in a safe set."""
    if value is not None and not _SAFE_NAME.fullmatch(value):
        raise SpecValueError(
            f"{shown(value)} is not a valid name",
            "use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        )


def each(check: Validator) -> Validator:
    """Apply `check` to every element of a list or every value of a table."""
    def check_all(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        items = value.values() if isinstance(value, dict) else value
        for item in items or ():
            check(inst, attr, item)
    return check_all
