"""Repeated n-grams (paper section 3.1): a run of 32 or more repeats of any n-gram, n = 1..13.

A p-gram repeated k times in a row spans k*p tokens in which x[i] == x[i+p] holds for (k-1)*p
consecutive positions; so "k >= min_repeats" is "a run of at least (min_repeats-1)*p equal
pairs at lag p". The curation filter drops such documents; the loader masks such instances.
"""

from __future__ import annotations

import numpy as np

__all__ = ["has_repeated_ngram", "repeated_ngram_rows"]


def _longest_runs(equal: np.ndarray) -> np.ndarray:
    """Longest run of True along the last axis, per row."""
    if equal.shape[-1] == 0:
        return np.zeros(equal.shape[:-1], dtype=np.int64)
    count = np.cumsum(equal, axis=-1, dtype=np.int64)
    # at each False, remember the count so far; a run's length is count minus the last such mark
    marks = np.where(equal, 0, count)
    np.maximum.accumulate(marks, axis=-1, out=marks)
    return (count - marks).max(axis=-1)  # type: ignore[no-any-return]


def repeated_ngram_rows(tokens: np.ndarray, max_period: int = 13, min_repeats: int = 32) -> np.ndarray:
    """For a (rows, length) array, which rows hold a repeated n-gram run. Vectorised over rows."""
    rows = np.atleast_2d(tokens)
    found = np.zeros(rows.shape[0], dtype=bool)
    for period in range(1, max_period + 1):
        need = (min_repeats - 1) * period
        if rows.shape[1] - period < need:
            break
        equal = rows[:, period:] == rows[:, :-period]
        found |= _longest_runs(equal) >= need
    return found


def has_repeated_ngram(tokens: np.ndarray | list[int], max_period: int = 13, min_repeats: int = 32) -> bool:
    """Whether one sequence holds a run of `min_repeats`+ repeats of an n-gram with n <= max_period."""
    array = np.asarray(tokens)
    return bool(repeated_ngram_rows(array.reshape(1, -1), max_period, min_repeats)[0])
