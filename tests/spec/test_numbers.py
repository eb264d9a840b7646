"""Every number a recipe writes is checked the same way: NaN, infinities and integers past 64 bits are
refused for every field, found by walking the attrs classes (so a field added later is covered too).

specs/tiny.toml has a stage of every kind; each case overrides one field of it with `--set`.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import attrs
import pytest

from olmo2spec.compiler import check
from olmo2spec.kinds import spec_classes
from olmo2spec.plan.plan import to_json
from olmo2spec.spec.diagnostics import SpecError
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.schedules import SCHEDULES
from olmo2spec.spec.structure import toml_key
from olmo2spec.spec.types import Inherit, Tokens

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "specs" / "tiny.toml")
STAGE_OF_KIND = {"prepare": "prepare", "pretrain": "pretrain", "microanneal": "microanneal", "anneal": "anneal",
                 "soup": "soup", "eval": "eval-base", "sft": "sft", "dpo": "dpo", "reward": "reward", "rlvr": "rlvr",
                 "export": "export"}
SCHEDULE_OF_STAGE = {"pretrain": "cosine", "microanneal": "linear", "anneal": "linear", "sft": "linear",
                     "dpo": "linear", "reward": "linear", "rlvr": "linear"}


def _numbers(cls: type, prefix: str) -> list[tuple[str, str]]:
    """(dotted key, kind) of every number field of `cls` and of the tables under it: kind is 'float' or 'int'."""
    found = []
    for a in attrs.fields(cls):
        hint = get_type_hints(cls)[a.name]
        key = f"{prefix}.{toml_key(a)}"
        options = set(get_args(hint)) if get_origin(hint) is not None and get_origin(hint) is not list else {hint}
        if hint is Inherit or float in options:
            found.append((key, "float"))
        elif int in options or Tokens in options or hint is Tokens:
            found.append((key, "int"))
        elif get_origin(hint) is list and get_args(hint)[0] in (int, float):
            found.append((key, "list-" + get_args(hint)[0].__name__))
        elif attrs.has(hint) and toml_key(a) not in ("lr",):
            found += _numbers(hint, key)
    return found


def _cases() -> list[tuple[str, str]]:
    cases = []
    for a in attrs.fields(Recipe):
        hint = get_type_hints(Recipe)[a.name]
        if attrs.has(hint):
            cases += _numbers(hint, toml_key(a))
    for kind, cls in spec_classes().items():
        stage = STAGE_OF_KIND[kind]
        cases += [(key, k) for key, k in _numbers(cls, f"stages.{stage}") if not key.endswith(".kind")]
        if kind in SCHEDULE_OF_STAGE:
            cases += _numbers(SCHEDULES[SCHEDULE_OF_STAGE[kind]], f"stages.{stage}.lr")
    # tables of tables: one of each
    cases += [("sources.demo-web.tokens", "int"), ("mixes.demo-pretrain.source_pct.demo-web", "float"),
              ("mixes.demo-anneal.mix_pct.demo-web", "float"), ("mixes.demo-anneal.tokens", "int")]
    return cases


CASES = _cases()
BAD = {"float": ["nan", "-inf"], "int": ["18446744073709551616"],
       "list-float": ["[nan, 0.5]"], "list-int": ["[1, 18446744073709551616]"]}


def test_the_walk_finds_the_fields_of_interest() -> None:
    keys = {key for key, _kind in CASES}
    assert {"stages.sft.lr.start", "cluster.mfu", "recipe.seed", "stages.anneal.seeds", "stages.soup.weights",
            "optimizer.betas", "stages.rlvr.verifier_reward", "model.d_model"} <= keys
    assert len(CASES) > 80


@pytest.mark.parametrize(("key", "value"), [(key, v) for key, kind in CASES for v in BAD[kind]])
def test_every_number_field_refuses_non_finite_and_oversized_values(key: str, value: str) -> None:
    with pytest.raises(SpecError) as caught:
        check(TINY, [f"{key}={value}"])
    errors = [d for d in caught.value.diagnostics if d.severity.value == "error"]
    assert errors, f"{key}={value} was accepted"
    assert all(d.location is not None for d in errors)
    located = [d for d in errors if d.location is not None and d.location.file == "--set"]
    assert located, [d.render() for d in errors]


@pytest.mark.parametrize("key", [key for key, kind in CASES if kind == "int"])
def test_the_largest_integers_are_checked_without_overflow_or_hang(key: str) -> None:
    """2**63-1 is valid TOML: the checker answers (an error or a plan) at once, no OverflowError, no hang."""
    try:
        checked = check(TINY, [f"{key}={2**63 - 1}"])
    except SpecError as exc:
        assert all(d.location is not None for d in exc.diagnostics)
    else:
        assert to_json(checked.plan)
