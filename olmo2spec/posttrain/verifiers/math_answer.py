"""MATH: the response's final answer is mathematically equivalent to the ground truth.

Extraction is ours, in open-instruct's MathVerifier order (ground_truth_utils.py): the last
`\\boxed{...}` / `\\fbox{...}` (braces matched, `\\{` `\\}` skipped, so nested fractions and sets
work; an unclosed one gives no answer), else Minerva's "Final Answer: The final answer is X. I hope
it is correct.", else the text between the last two `$`. Unlike open-instruct we never fall back to
the whole response: a response without a final answer scores 0.

Equivalence is `math-verify`'s (Hugging Face's maintained parser and grader, on sympy): numbers
by value ("0.5" = "\\frac{1}{2}", "1,000" = "1000"), expressions symbolically, intervals, sets,
tuples and equations ("x=2" = "2") by its rules.

math-verify bounds each parse and comparison with `signal.alarm`, which only works in the main
thread; elsewhere (a thread pool) it runs without that bound, so an answer longer than
`MAX_ANSWER_CHARS` is refused (0.0) rather than handed to sympy. Its alarm also replaces a SIGALRM
handler of the caller's for the duration of the call (and restores it).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from olmo2spec.posttrain.verifiers.errors import GroundTruthError, VerifierUnavailable

__all__ = ["score", "extract_answer", "last_boxed", "minerva_answer", "equivalent", "MAX_ANSWER_CHARS",
           "TIMEOUT_SECONDS"]

MAX_ANSWER_CHARS = 512  # MATH's longest reference answers are under 200 characters
TIMEOUT_SECONDS = 5  # math-verify's own default, per parse and per comparison

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MINERVA_START = "Final Answer: The final answer is"
_MINERVA_END = "I hope it is correct"


def _braced(text: str, start: int) -> str | None:
    """The contents of the `{...}` group opening at text[start], or None when it never closes."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character (`\{`, `\}`, `\\`) never opens or closes a group
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) in `text`, or None."""
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    rest = matches[-1].end()
    after = text[rest:].lstrip()
    if after.startswith("{"):
        return _braced(text, len(text) - len(after))
    if text[rest:rest + 1] == " ":  # `\boxed 5`: one token, up to whitespace or `$`
        token = re.match(r"[^\s$]+", after)
        return token.group(0) if token else None
    return None


def minerva_answer(text: str) -> str | None:
    """X in the last "Final Answer: The final answer is X. I hope it is correct.", or None."""
    start = text.rfind(_MINERVA_START)  # the last one, found in linear time (a lazy regex is quadratic here)
    if start < 0:
        return None
    end = text.find(_MINERVA_END, start)
    if end < 0:
        return None
    answer = text[start + len(_MINERVA_START):end].rstrip()
    return answer.removesuffix(".").strip()


def _last_dollars(text: str) -> str | None:
    end = text.rfind("$")
    start = text.rfind("$", 0, end) if end > 0 else -1
    return text[start + 1:end] if start >= 0 else None


def extract_answer(response: str) -> str | None:
    """The final answer written in `response` (boxed, else Minerva, else the last `$...$`), or None."""
    for extract in (last_boxed, minerva_answer, _last_dollars):
        answer = extract(response)
        if answer is not None:
            answer = answer.strip().strip("$").strip()
            return answer or None
    return None


def _math_verify() -> Any:
    try:
        import math_verify  # type: ignore[import-untyped]  # no type information shipped
    except ImportError as exc:
        raise VerifierUnavailable("the 'math' verifier needs the 'math-verify' package, which is not installed: "
                                  "pip install 'olmo2spec[posttrain]'") from exc
    return math_verify


def _timeout() -> int | None:
    """math-verify's signal-based timeout where signals work (the main thread), None elsewhere."""
    return TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def equivalent(answer: str, truth: str) -> bool:
    """Whether LaTeX `answer` is mathematically equivalent to LaTeX `truth`, by math-verify."""
    if answer == truth:
        return True
    if len(answer) > MAX_ANSWER_CHARS:
        return False
    mv = _math_verify()
    timeout = _timeout()
    gold = mv.parse(f"${truth}$", parsing_timeout=timeout)
    if not gold:
        raise GroundTruthError(f"math ground truth {truth!r:.80} does not parse as LaTeX: write the answer alone, "
                               "as in MATH's solutions' \\boxed{} (e.g. \"\\frac{1}{2}\")")
    target = mv.parse(f"${answer}$", parsing_timeout=timeout)
    return bool(target) and bool(mv.verify(gold, target, timeout_seconds=timeout))


def _truth(ground_truth: object) -> str:
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, int, float)):
        raise GroundTruthError(f"math ground truth must be a LaTeX string, not {type(ground_truth).__name__}")
    text = str(ground_truth)
    truth = last_boxed(text) if _BOXED.search(text) else text  # a whole solution: its boxed answer
    truth = (truth or "").strip().strip("$").strip()
    if not truth:
        raise GroundTruthError(f"math ground truth {ground_truth!r:.80} has no answer: write the final answer, "
                               "e.g. \"\\frac{1}{2}\"")
    return truth


def score(response: str, ground_truth: object) -> float:
    """1.0 when the final answer of `response` is equivalent to `ground_truth`, else 0.0."""
    truth = _truth(ground_truth)
    answer = extract_answer(response)
    return 1.0 if answer is not None and equivalent(answer, truth) else 0.0
