"""The curation filters of section 2.4.1, as small pure functions with their thresholds as parameters.

Each filter answers "drop this document?". `prepare` applies the filters a stage names, in the
stage's order, through the `FILTERS` registry; a document dropped by one filter is counted
under that filter only. Code filters (`CODE_FILTERS`) apply only to sources of category "code".

- `repeated_ngrams`: a run of `min_repeats` (32) or more repeats of any n-gram with n <= 13,
  the pattern section 3.1 traces loss spikes to (`ngrams.has_repeated_ngram`).
- `code_word_frequency`: a code document whose most frequent word is more than 30% of its
  words, or whose two most frequent words are more than 50% (exactly 30% / 50% are kept).
  A code document without a single word is dropped: it holds nothing to learn from.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction

import attrs
import numpy as np

from olmo2spec.data.ngrams import has_repeated_ngram

__all__ = [
    "FilterParams", "Filter", "FILTERS", "CODE_FILTERS", "applies", "repeated_ngrams", "code_word_frequency",
]

_WORD = re.compile(r"\w+")


def repeated_ngrams(tokens: np.ndarray | Sequence[int], max_period: int = 13, min_repeats: int = 32) -> bool:
    """Drop when the tokens hold `min_repeats`+ repeats in a row of an n-gram with n <= `max_period`."""
    return has_repeated_ngram(np.asarray(tokens), max_period, min_repeats)


def _exceeds(count: int, total: int, share: float) -> bool:
    """count / total > share, exactly: `share` is read as the decimal it was written as (0.3 is 3/10)."""
    return Fraction(count, total) > Fraction(repr(share))


def code_word_frequency(text: str, top1: float = 0.30, top2: float = 0.50) -> bool:
    """Drop a code document whose top word is more than `top1` of its words, or top two more than `top2`.

    Words are `\\w+` runs, case-sensitive. A document with no words is dropped.
    """
    counts = Counter(_WORD.findall(text))
    total = sum(counts.values())
    if total == 0:
        return True
    top = [n for _, n in counts.most_common(2)]
    return _exceeds(top[0], total, top1) or _exceeds(sum(top), total, top2)


@attrs.frozen(kw_only=True)
class FilterParams:
    """Every filter threshold; `prepare` takes the n-gram ones from the plan's `[data]`."""

    ngram_max_period: int = 13
    ngram_min_repeats: int = 32
    code_top1: float = 0.30
    code_top2: float = 0.50


Filter = Callable[[str, np.ndarray, FilterParams], bool]
"""(text, tokens, params) -> drop the document?"""

FILTERS: dict[str, Filter] = {
    "repeated_ngrams": lambda _text, tokens, p: repeated_ngrams(tokens, p.ngram_max_period, p.ngram_min_repeats),
    "code_word_frequency": lambda text, _tokens, p: code_word_frequency(text, p.code_top1, p.code_top2),
}
"""Filter name (as in a prepare stage's `filters`) -> the filter."""

CODE_FILTERS = frozenset({"code_word_frequency"})
"""Filters that apply only to sources of category "code"."""


def applies(name: str, category: str) -> bool:
    """Whether filter `name` applies to a source of `category`."""
    return name not in CODE_FILTERS or category == "code"
