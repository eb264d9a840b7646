"""Value types that recipes write in more than one form, and their parsers.

Each has a cattrs structure hook in `structure.py` and a JSON Schema in `jsonschema.py`.
"""

from __future__ import annotations

import math
import re
from typing import Literal, NewType

import attrs

__all__ = ["Tokens", "Share", "AutoInt", "Inherit", "parse_share", "SHARE_REPEAT_PATTERN"]

Tokens = NewType("Tokens", int)
"""A token count: "50B", "3.895T", 5e12 or a plain integer."""

AutoInt = int | Literal["auto"]
"""A positive integer, or "auto" for the plan to choose."""

Inherit = float | Literal["inherit"]
"""A learning rate, or "inherit" to start where the predecessor stage stopped."""

SHARE_REPEAT_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*x\s*$"
_REPEAT = re.compile(SHARE_REPEAT_PATTERN)


@attrs.frozen
class Share:
    """How much of a source a mix uses: a source % (<= 100) or declared repeats ("2x")."""

    percent: float
    repeats_declared: bool

    def __str__(self) -> str:
        return f"{self.percent / 100:g}x" if self.repeats_declared else f"{self.percent:g}%"


def parse_share(value: object) -> Share:
    """`3.23` -> 3.23 % of the source; `"4x"` -> 400 %, repeats declared.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and value >= 0):  # nan, inf and -1 would take no or negative tokens
            raise ValueError(f"a source % must be a finite number, 0 or more (got {value!r})")
        return Share(float(value), repeats_declared=False)
    if isinstance(value, str) and _REPEAT.fullmatch(value):
        repeats = float(value.strip()[:-1])
        if not math.isfinite(repeats * 100):  # 400 nines read as inf
            raise ValueError(f"repeats must be a finite number (got {value!r})")
        return Share(repeats * 100, repeats_declared=True)
    raise ValueError(
        f"expected a source % such as 3.23, or repeats such as \"2x\" (got {value!r})"
    )
