from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from conftest import ROOT, SHIPPED_SPECS, SPECS

from olmo2spec.spec.compose import compose
from olmo2spec.spec.jsonschema import DRAFT, recipe_schema

BROKEN = ROOT / "tests" / "data" / "broken"
# Broken recipes whose one mistake is a key, a type or a single value: the schema must see them too.
# (The others break rules between fields, which only the checker knows.)
STRUCTURAL = [
    "missing-required", "type-bad-share", "type-bad-tokens", "type-bool-for-float", "type-string-for-int",
    "type-table-for-list", "unknown-key-lr", "unknown-key-model", "unknown-key-stage", "unknown-key-top",
    "value-bad-enum", "value-negative", "value-out-of-range", "value-stage-name-dotdot",
    "value-stage-name-shell", "value-stage-name-space",
]


@pytest.fixture(scope="module")
def full() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(recipe_schema())


@pytest.fixture(scope="module")
def partial() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(recipe_schema(partial=True))


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    return compose(SPECS / "tiny.toml").data


def _errors(validator: jsonschema.Draft202012Validator, tree: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(tree)]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every subschema (dict) in the schema, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("partial_", [False, True], ids=["full", "partial"])
def test_schema_is_valid_draft_2020_12(partial_: bool) -> None:
    schema = recipe_schema(partial=partial_)
    assert schema["$schema"] == DRAFT
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_is_deterministic() -> None:
    assert json.dumps(recipe_schema()) == json.dumps(recipe_schema())
    assert list(recipe_schema()["$defs"]) == sorted(recipe_schema()["$defs"])


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_composed_shipped_specs_validate(full: jsonschema.Draft202012Validator, name: str) -> None:
    assert _errors(full, compose(SPECS / f"{name}.toml").data) == []


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.toml")), ids=lambda p: str(p.relative_to(SPECS)))
def test_every_spec_file_validates_as_a_fragment(partial: jsonschema.Draft202012Validator, path: Any) -> None:
    assert _errors(partial, tomllib.loads(path.read_text(encoding="utf-8"))) == []


DELETE = object()
# Each breakage changes one key of the tiny recipe: (path, new value or DELETE).
BREAKAGES: dict[str, tuple[tuple[Any, ...], Any]] = {
    "unknown top-level key": (("modle",), {}),
    "unknown model key": (("model", "d_modle"), 256),
    "unknown stage key": (("stages", 1, "bacth_size"), 16),
    "string for int": (("model", "d_model"), "256"),
    "bool for float": (("cluster", "mfu"), True),
    "bad enum": (("model", "norm"), "post"),
    "bad stage kind": (("stages", 1, "kind"), "pretrian"),
    "bad token count": (("stages", 1, "tokens"), "1 million"),
    "bad share": (("mixes", "demo-pretrain", "source_pct", "demo-web"), "2y"),
    "bad auto": (("stages", 1, "micro_batch"), "automatic"),
    "bad inherit": (("stages", 3, "lr", "start"), "inherited"),
    "bad list item": (("stages", 0, "filters", 1), "profanity"),
    "unsafe name": (("recipe", "name"), "my recipe"),
    "not positive": (("model", "n_layers"), 0),
    "missing required key": (("model", "d_model"), DELETE),
    "missing stage kind": (("stages", 1, "kind"), DELETE),
    "missing schedule kind": (("stages", 1, "lr", "schedule"), DELETE),
}


def _leaves(errors: Any) -> Iterator[jsonschema.ValidationError]:
    """The innermost errors: a stage that matches no `oneOf` branch says why for each branch."""
    for error in errors:
        yield error
        yield from _leaves(error.context)


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_trees_fail_at_the_broken_key(full: jsonschema.Draft202012Validator, tiny: dict[str, Any],
                                            breakage: str) -> None:
    path, value = BREAKAGES[breakage]
    tree = copy.deepcopy(tiny)
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    errors = list(full.iter_errors(tree))
    assert errors
    # The error is at the key itself, or at its table naming it (unknown and missing keys).
    assert any(tuple(e.absolute_path) == path
               or (tuple(e.absolute_path) == path[:-1] and repr(path[-1]) in e.message)
               for e in _leaves(errors)), [e.message for e in _leaves(errors)]


@pytest.mark.parametrize("name", STRUCTURAL)
def test_broken_recipes_fail(full: jsonschema.Draft202012Validator, name: str) -> None:
    assert _errors(full, compose(BROKEN / f"{name}.toml").data)


def test_partial_accepts_stages_merged_by_name(partial: jsonschema.Draft202012Validator,
                                               full: jsonschema.Draft202012Validator) -> None:
    fragment = {"stages": [{"name": "sft", "nodes": 4, "lr": {"start": 5e-6}}]}
    assert _errors(partial, fragment) == []
    assert _errors(full, fragment)
    assert _errors(partial, {"stages": [{"name": "sft", "nodez": 4}]})


def test_partial_requires_nothing() -> None:
    assert not [s for s in _walk(recipe_schema(partial=True)) if "required" in s]
    assert recipe_schema()["required"] == ["recipe", "model", "tokenizer", "cluster", "stages"]


def test_every_property_is_described() -> None:
    for schema in (recipe_schema(), recipe_schema(partial=True)):
        for node in _walk(schema):
            if node.get("type") == "object" and "properties" in node:
                assert node["description"].strip()
                for key, prop in node["properties"].items():
                    assert isinstance(prop.get("description"), str) and prop["description"].strip(), key


def test_defaults_satisfy_their_own_schema() -> None:
    schema = recipe_schema()
    checked = 0
    for node in _walk(schema):
        for key, prop in node.get("properties", {}).items():
            if "default" in prop:
                own = jsonschema.Draft202012Validator({**prop, "$defs": schema["$defs"]})
                assert list(own.iter_errors(prop["default"])) == [], key
                checked += 1
    assert checked > 50


def test_keys_types_and_checks_come_from_the_fields() -> None:
    defs = recipe_schema()["$defs"]
    stage = defs["PretrainStage"]["properties"]
    assert "from" in stage and "from_" not in stage
    assert stage["kind"]["const"] == "pretrain"
    assert stage["name"]["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    assert stage["tokens"]["anyOf"][2]["pattern"]  # "50B"
    assert stage["tokens"]["exclusiveMinimum"] == 0
    assert {"$ref": "#/$defs/CosineSchedule"} in stage["lr"]["oneOf"]
    model = defs["ModelSpec"]["properties"]
    assert model["norm"] == {**model["norm"], "enum": ["reordered", "pre"], "default": "reordered"}
    assert (model["dropout"]["minimum"], model["dropout"]["maximum"]) == (0, 1)
    assert model["rope_theta"]["default"] == 500_000.0
    assert defs["PrepareStage"]["properties"]["filters"]["items"]["enum"] == ["repeated_ngrams",
                                                                             "code_word_frequency"]
    assert defs["MixSpec"]["properties"]["source_pct"]["type"] == "object"
    assert defs["OptimizerSpec"]["properties"]["betas"]["default"] == [0.9, 0.95]
    assert "default" not in recipe_schema()["properties"]["optimizer"]  # a factory of an attrs class
    assert set(recipe_schema()["properties"]) >= {"extends", "include"}


@pytest.mark.parametrize("args", [[], ["--partial"]], ids=["full", "partial"])
def test_cli_prints_the_schema(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "olmo2spec.cli", "schema", *args], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == recipe_schema(partial=bool(args))
