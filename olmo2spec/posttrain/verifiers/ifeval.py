"""IFEval-style constraints: 1.0 when the response follows every instruction of the ground truth.

The ground truth is what Google's IFEval data and open-instruct's RLVR IFEval data carry:

    {"instruction_id": ["punctuation:no_comma", "length_constraints:number_words"],
     "kwargs": [{}, {"num_words": 50, "relation": "less than"}]}

as a dict, a JSON (or Python-literal) string of one, or a one-element list of either (open-instruct
stores it so). A kwarg whose value is None is absent (datasets fill every column of every row).
The score is binary, IFEval's strict "prompt-level" accuracy: open-instruct's IFEvalVerifier
averages over the instructions instead, but OLMo 2's RLVR reward is verified or not.
The instruction ids and their semantics: `ifeval_instructions`.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from olmo2spec.posttrain.verifiers.errors import GroundTruthError
from olmo2spec.posttrain.verifiers.ifeval_instructions import INSTRUCTIONS, RELATIONS, UNSUPPORTED

__all__ = ["score", "constraints"]

_FIX = ('write it as {"instruction_id": ["punctuation:no_comma", ...], "kwargs": [{}, ...]}, one kwargs dict '
        "per instruction id")


def _decoded(ground_truth: object) -> object:
    if isinstance(ground_truth, list) and len(ground_truth) == 1:
        ground_truth = ground_truth[0]
    if not isinstance(ground_truth, str):
        return ground_truth
    text = ground_truth
    try:
        decoded = json.loads(text)
    except ValueError:
        try:
            decoded = ast.literal_eval(text)  # open-instruct writes Python reprs too
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise GroundTruthError(f"ifeval ground truth {text!r:.80} is neither JSON nor a Python literal: "
                                   f"{_FIX}") from exc
    return decoded[0] if isinstance(decoded, list) and len(decoded) == 1 else decoded


def _checked_kwargs(instruction_id: str, kwargs: object) -> dict[str, Any]:
    """`kwargs` without its None values, each present, of its type and in range, or GroundTruthError."""
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise GroundTruthError(f"ifeval ground truth: the kwargs of {instruction_id!r} must be a dict, "
                               f"not {type(kwargs).__name__}: {_FIX}")
    given = {name: value for name, value in kwargs.items() if value is not None}
    wanted = INSTRUCTIONS[instruction_id].kwargs
    unknown = sorted(set(given) - set(wanted))
    missing = sorted(set(wanted) - set(given))
    if unknown or missing:
        raise GroundTruthError(
            f"ifeval ground truth: {instruction_id!r} takes the kwargs {sorted(wanted) or 'none'}"
            + (f"; unknown: {unknown}" if unknown else "") + (f"; missing: {missing}" if missing else ""))
    return {name: _checked_value(instruction_id, name, given[name], wanted[name]) for name in wanted}


def _checked_value(instruction_id: str, name: str, value: object, kind: type) -> object:
    where = f"ifeval ground truth: {instruction_id!r} kwarg {name!r}"
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a nullable integer column comes back as float from pandas
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GroundTruthError(f"{where} must be a whole number >= 0, not {value!r:.80}")
    elif kind is str:
        if not isinstance(value, str) or not value.strip():
            raise GroundTruthError(f"{where} must be non-empty text, not {value!r:.80}")
        if name in ("relation", "let_relation") and value not in RELATIONS:
            raise GroundTruthError(f"{where} must be one of {list(RELATIONS)}, not {value!r:.80}")
        if name == "letter" and len(value.strip()) != 1:
            raise GroundTruthError(f"{where} must be a single letter, not {value!r:.80}")
    elif not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise GroundTruthError(f"{where} must be a non-empty list of non-empty strings, not {value!r:.80}")
    return value


def _known(instruction_id: object) -> str:
    if not isinstance(instruction_id, str):
        raise GroundTruthError(f"ifeval ground truth: an instruction id must be a string, not {instruction_id!r:.80}")
    if instruction_id in UNSUPPORTED:
        raise GroundTruthError(f"ifeval instruction {instruction_id!r} is not supported: "
                               f"{UNSUPPORTED[instruction_id]}; drop those prompts from the RLVR data")
    if instruction_id not in INSTRUCTIONS:
        raise GroundTruthError(f"unknown ifeval instruction id {instruction_id!r}; the ids supported are: "
                               + ", ".join(sorted(INSTRUCTIONS)))
    return instruction_id


def constraints(ground_truth: object) -> list[tuple[str, dict[str, Any]]]:
    """The (instruction id, kwargs) pairs of an IFEval ground truth, checked.

    Raises:
        GroundTruthError: not of the form above, an unknown or unsupported id, a wrong kwarg.
    """
    decoded = _decoded(ground_truth)
    if not isinstance(decoded, dict) or "instruction_id" not in decoded:
        raise GroundTruthError(f"ifeval ground truth {ground_truth!r:.80} has no 'instruction_id': {_FIX}")
    ids = decoded["instruction_id"]
    ids = [ids] if isinstance(ids, str) else ids
    all_kwargs = decoded.get("kwargs")
    if all_kwargs is None:
        all_kwargs = [None] * len(ids) if isinstance(ids, list) else None
    elif isinstance(all_kwargs, dict):
        all_kwargs = [all_kwargs]
    if not isinstance(ids, list) or not ids or not isinstance(all_kwargs, list) or len(all_kwargs) != len(ids):
        raise GroundTruthError(f"ifeval ground truth {ground_truth!r:.80} needs a non-empty 'instruction_id' list and "
                               f"a 'kwargs' list of the same length: {_FIX}")
    return [(_known(each), _checked_kwargs(each, kwargs)) for each, kwargs in zip(ids, all_kwargs, strict=True)]


def score(response: str, ground_truth: object) -> float:
    """1.0 when `response` is non-empty and follows every instruction of `ground_truth`, else 0.0."""
    checks = constraints(ground_truth)  # the data is checked even when the response is empty
    if not response.strip():
        return 0.0
    return 1.0 if all(INSTRUCTIONS[each].check(response, **kwargs) for each, kwargs in checks) else 0.0
