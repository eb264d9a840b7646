"""The curation filters of section 2.4.1, at their exact thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from olmo2spec.data.filters import (
    CODE_FILTERS,
    FILTERS,
    FilterParams,
    applies,
    code_word_frequency,
    repeated_ngrams,
)
from olmo2spec.spec.stages import FILTERS as SPEC_FILTERS

PREFIX = list(range(1000, 1020))
SUFFIX = list(range(2000, 2020))


def repeated(gram: list[int], times: int) -> list[int]:
    """`gram` repeated `times` times in a row, between context tokens that repeat nothing."""
    return PREFIX + gram * times + SUFFIX


def words(*counts: int) -> str:
    """A document whose i-th word occurs counts[i] times (words w0, w1, ...), shuffled deterministically."""
    items = [f"w{i}" for i, n in enumerate(counts) for _ in range(n)]
    order = np.random.default_rng(0).permutation(len(items))
    return " ".join(items[i] for i in order)


@pytest.mark.parametrize("period", [1, 2, 7, 13])
def test_repeated_ngrams_32_repeats_drop_31_keep(period):
    gram = list(range(100, 100 + period))
    assert repeated_ngrams(repeated(gram, 32))
    assert not repeated_ngrams(repeated(gram, 31))


def test_repeated_ngrams_13_gram_drops_14_gram_keeps():
    assert repeated_ngrams(repeated(list(range(100, 113)), 32))  # a 13-gram: checked
    assert not repeated_ngrams(repeated(list(range(100, 114)), 40))  # a 14-gram: longer than max_period
    assert repeated_ngrams(repeated(list(range(100, 114)), 32), max_period=14)


def test_repeated_ngrams_thresholds_are_parameters():
    doc = repeated([5, 6], 10)
    assert not repeated_ngrams(doc)
    assert repeated_ngrams(doc, min_repeats=10)
    assert not repeated_ngrams(doc, min_repeats=11)
    assert not repeated_ngrams(doc, max_period=1, min_repeats=10)


def test_repeated_ngrams_short_and_plain_documents_keep():
    assert not repeated_ngrams([])
    assert not repeated_ngrams([1])
    assert not repeated_ngrams(np.arange(5000, dtype=np.uint32))


def test_repeated_ngrams_accepts_arrays():
    assert repeated_ngrams(np.asarray(repeated([3], 32), dtype=np.uint32))


def test_code_top_word_30_percent_keeps_31_drops():
    assert not code_word_frequency(words(30, *[1] * 70))  # exactly 30% of 100 words
    assert code_word_frequency(words(31, *[1] * 69))  # 31%
    assert not code_word_frequency(words(3, *[1] * 7))  # 30% of 10: 0.3 * 10 is not a float trap


def test_code_top_two_words_50_percent_keeps_51_drops():
    assert not code_word_frequency(words(25, 25, *[1] * 50))  # 50%, and the top word only 25%
    assert code_word_frequency(words(26, 25, *[1] * 49))  # 51%
    assert not code_word_frequency(words(30, 20, *[1] * 50))  # both at their threshold exactly


def test_code_thresholds_are_parameters():
    doc = words(40, *[1] * 60)
    assert code_word_frequency(doc)
    assert not code_word_frequency(doc, top1=0.40, top2=0.41)
    assert code_word_frequency(doc, top1=0.40, top2=0.40)


def test_code_words_are_word_character_runs():
    # `x_1` is one word, punctuation separates: x_1 is 3 of 9 words (33%)
    assert code_word_frequency("x_1 = x_1 + x_1; a b c d e f")
    assert not code_word_frequency("alpha.beta(gamma) -> delta")  # 1 of 4 each: 25%, top two 50%
    assert code_word_frequency("def f(a, b):\n    return a + b\n")  # a and b are 4 of 7 words: tiny snippets drop


def test_code_documents_without_words_drop():
    assert code_word_frequency("")
    assert code_word_frequency("  {}();\n\t+-*/ ")


def test_registry_matches_the_spec_and_applies_code_filters_to_code_only():
    assert set(FILTERS) == set(SPEC_FILTERS)
    assert sorted(CODE_FILTERS) == ["code_word_frequency"]
    assert applies("code_word_frequency", "code")
    assert not applies("code_word_frequency", "web")
    assert applies("repeated_ngrams", "web") and applies("repeated_ngrams", "code")


def test_registry_functions_use_the_params():
    tokens = np.asarray(repeated([9], 32), dtype=np.uint32)
    params = FilterParams()
    assert FILTERS["repeated_ngrams"]("", tokens, params)
    assert not FILTERS["repeated_ngrams"]("", tokens, FilterParams(ngram_min_repeats=33))
    text = words(31, *[1] * 69)
    assert FILTERS["code_word_frequency"](text, tokens, params)
    assert not FILTERS["code_word_frequency"](text, tokens, FilterParams(code_top1=0.31))
