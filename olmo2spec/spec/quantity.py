"""Token quantities as recipes write them: "50B", "3.895T", 5e12 or 4_000_000."""

from __future__ import annotations

import math
import re

__all__ = ["parse_tokens", "format_tokens", "QUANTITY_PATTERN"]

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
QUANTITY_PATTERN = r"^\s*[0-9][0-9_]*(\.[0-9]+)?\s*[KMBTkmbt]?\s*$"
_QUANTITY = re.compile(QUANTITY_PATTERN)


def parse_tokens(value: object) -> int:
    """A token count as an integer.

    Raises:
        ValueError: for negative, fractional or malformed quantities.
    """
    if isinstance(value, bool):
        raise ValueError("expected a token count, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"a token count must be a whole number (got {value!r})")
        number = int(value)
    elif isinstance(value, str) and _QUANTITY.fullmatch(value):
        text = value.strip().replace("_", "")
        suffix = text[-1].upper() if text[-1].isalpha() else ""
        digits = text[:-1] if suffix else text
        # Decimal arithmetic on the digits avoids float error: "3.895T" is exactly 3895e9.
        whole, _, frac = digits.partition(".")
        scale = _SUFFIX[suffix]
        if len(frac) > 0 and scale % 10 ** len(frac) != 0:
            raise ValueError(f"{value!r} is not a whole number of tokens")
        number = int(whole) * scale + (int(frac) * (scale // 10 ** len(frac)) if frac else 0)
    else:
        raise ValueError(f"expected a token count such as \"50B\", \"3.895T\" or 5e12 (got {value!r})")
    if number < 0:
        raise ValueError(f"a token count cannot be negative (got {value!r})")
    return number


def format_tokens(n: float) -> str:
    """4_050_000_000_000 -> "4.05T"; the shortest exact-looking form for tables."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{suffix}"
    return f"{n:.4g}"
