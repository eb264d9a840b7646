"""GSM8K: the last number in the response equals the ground truth.

As open-instruct's GSM8KVerifier (ground_truth_utils.py) does, the answer is the last number in
the response, whatever words surround it ("#### 18", "The answer is $18.", "18 eggs"). It differs
where that one is lossy: the two are compared as numbers ("18.00" = "18"), a minus sign is kept
("-5"; open-instruct's pattern drops it unless the number has a decimal point), the Unicode minus
counts as one, and only thousands separators are removed ("1,000" is 1000, but "1,2,3" is three
numbers, the last 3, where joining every comma between digits would read 123).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from olmo2spec.posttrain.verifiers.errors import GroundTruthError

__all__ = ["score", "last_number", "as_number"]

_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})
# A comma between digits that is followed by exactly three digits: a thousands separator.
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
# A sign only where it cannot be a binary minus: "3-5" is 3 and 5, "x = -5" is -5.
_NUMBER = re.compile(r"(?<![0-9A-Za-z_.)])[-+]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")


def _normalised(text: str) -> str:
    return _THOUSANDS.sub("", text.translate(_MINUS_SIGNS))


def last_number(response: str) -> Decimal | None:
    """The last number written in `response`, or None when it has none."""
    matches = _NUMBER.findall(_normalised(response))
    return Decimal(matches[-1]) if matches else None


def as_number(ground_truth: object) -> Decimal:
    """The ground truth as a number: an int, a float, a string of one ("1,000", "$18", "-3.5"), or GSM8K's
    whole answer field (the solution, then "#### 18").

    Raises:
        GroundTruthError: it is not a number.
    """
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (int, float, str, Decimal)):
        raise GroundTruthError(f"gsm8k ground truth must be a number or a string of one, "
                               f"not {type(ground_truth).__name__} ({ground_truth!r:.80})")
    text = str(ground_truth).rpartition("####")[2]  # GSM8K's whole answer field: the number after "####"
    text = _normalised(text).strip().lstrip("$").rstrip(".").strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise GroundTruthError(f"gsm8k ground truth {ground_truth!r:.80} is not a number: write the answer alone, "
                               "e.g. \"18\" or \"1,000\" (the text after '####' in GSM8K's answers)")
    return number


def score(response: str, ground_truth: object) -> float:
    """1.0 when the last number in `response` equals `ground_truth`, else 0.0."""
    expected = as_number(ground_truth)
    found = last_number(response)
    return 1.0 if found is not None and found == expected else 0.0
