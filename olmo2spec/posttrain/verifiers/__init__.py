"""The verifiers RLVR rewards with: one table, read by the recipe checker and by the RLVR stage.

    verify("gsm8k", "... so she pays $1,000.", "1000")  -> 1.0

Each verifier maps a model's response and the prompt's ground truth to 1.0 (verified) or 0.0
(anything else: a wrong, missing or malformed answer). The stage multiplies the score by the
recipe's `verifier_reward` (10 in Tulu 3). What each one accepts:

- `gsm8k` (`gsm8k.py`): the last number in the response, compared as a number with the ground
  truth (a number or a string of one): thousands commas, `$`, a trailing period, a sign (ASCII or
  Unicode minus) and decimals are understood, so "$1,000." matches "1000" and "18.0" matches "18".
- `math` (`math_answer.py`): the answer in the last `\\boxed{...}` (nested braces) or `\\fbox{...}`,
  else Minerva's "Final Answer: The final answer is X. I hope it is correct.", else the last
  `$...$`; equal to the ground truth (LaTeX) when `math-verify` says the two are mathematically
  equivalent ("\\frac{1}{2}" = "0.5", "(x+1)^2" = "x^2+2x+1"). Needs the `posttrain` extra.
- `ifeval` (`ifeval.py`): the ground truth lists IFEval instruction ids and their kwargs, as
  Google's IFEval data and open-instruct's RLVR data do; 1.0 when the response follows every one
  (IFEval's strict mode), with the reference's semantics. `ifeval_instructions.INSTRUCTIONS`
  lists the ids supported; an unknown id is an error, not a silent 0.

Nothing here is imported until a verifier is used (the checker only needs the names): a row
names its scorer as "module:function", as `olmo2spec.kinds` names stage runners.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable

import attrs

from olmo2spec.posttrain.verifiers.errors import GroundTruthError, VerifierError, VerifierUnavailable

__all__ = [
    "Verifier", "VERIFIERS", "VERIFIER_NAMES", "verify", "scorer", "require",
    "VerifierError", "GroundTruthError", "VerifierUnavailable",
]

Score = Callable[[str, object], float]


@attrs.frozen(kw_only=True)
class Verifier:
    """One row: a verifier name as recipes write it, and where its scorer lives."""

    name: str
    """The name in an rlvr stage's `verifiers` list."""
    scorer: str
    """"module:function" of `(response, ground_truth) -> 1.0 | 0.0`."""
    needs: str | None = None
    """The package (import name) it needs beyond olmo2spec's own, from the `posttrain` extra."""


VERIFIERS: dict[str, Verifier] = {row.name: row for row in (
    Verifier(name="gsm8k", scorer="olmo2spec.posttrain.verifiers.gsm8k:score"),
    Verifier(name="math", scorer="olmo2spec.posttrain.verifiers.math_answer:score", needs="math_verify"),
    Verifier(name="ifeval", scorer="olmo2spec.posttrain.verifiers.ifeval:score"),
)}

VERIFIER_NAMES: tuple[str, ...] = tuple(VERIFIERS)
"""The names an rlvr stage's `verifiers` may list (the recipe checker reads these)."""


def _row(name: str) -> Verifier:
    row = VERIFIERS.get(name)
    if row is None:
        raise VerifierError(f"unknown verifier {name!r}: the verifiers are {', '.join(VERIFIER_NAMES)}")
    return row


def require(names: Iterable[str]) -> None:
    """Fail now, before any training, if a named verifier is unknown or its package is not installed.

    Raises:
        VerifierError: an unknown name.
        VerifierUnavailable: a verifier's package is missing; the message says what to install.
    """
    for name in names:
        row = _row(name)
        if row.needs is not None and importlib.util.find_spec(row.needs) is None:
            raise VerifierUnavailable(
                f"the {name!r} verifier needs the {row.needs.replace('_', '-')!r} package, which is not installed: "
                "pip install 'olmo2spec[posttrain]'")


def scorer(name: str) -> Score:
    """The scoring function of verifier `name`, imported on first use."""
    row = _row(name)
    require([name])
    module, function = row.scorer.split(":")
    found: Score = getattr(importlib.import_module(module), function)
    return found


def verify(name: str, response: str, ground_truth: object) -> float:
    """Score `response` against `ground_truth` with verifier `name`: 1.0 if verified, else 0.0.

    Raises:
        VerifierError: an unknown verifier name.
        GroundTruthError: `ground_truth` is malformed for that verifier (a data error, not the model's).
        VerifierUnavailable: the verifier's package is not installed.
    """
    if not isinstance(response, str):
        raise TypeError(f"a response is text (str), not {type(response).__name__}")
    return scorer(name)(response, ground_truth)
