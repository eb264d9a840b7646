from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
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
def full() -> jsonschema.Draft7Validator:
    """The composed recipe's schema."""
    return jsonschema.Draft7Validator(recipe_schema(composed=True))


@pytest.fixture(scope="module")
def file() -> jsonschema.Draft7Validator:
    """The schema of one file as written (what editors use)."""
    return jsonschema.Draft7Validator(recipe_schema())


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    return compose(SPECS / "tiny.toml").data


def _errors(validator: jsonschema.Draft7Validator, tree: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(tree)]


def _walk(node: Any, skip: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Every subschema (dict) in the schema, depth first, but those under a keyword in `skip`."""
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key not in skip:
                yield from _walk(value, skip)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, skip)


@pytest.mark.parametrize("composed", [False, True], ids=["file", "composed"])
def test_schema_is_valid_draft_7(composed: bool) -> None:
    schema = recipe_schema(composed=composed)
    assert schema["$schema"] == DRAFT
    jsonschema.Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("composed", [False, True], ids=["file", "composed"])
def test_schema_uses_only_what_taplo_implements(composed: bool) -> None:
    """taplo ignores a `$ref`'s siblings and every keyword newer than draft 7 (checked with taplo 0.9)."""
    newer = {"$defs", "prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentRequired",
             "dependentSchemas", "$anchor", "$dynamicRef", "minContains", "maxContains"}
    for node in _walk(recipe_schema(composed=composed)):
        assert not newer & set(node), newer & set(node)
        assert "$ref" not in node or set(node) == {"$ref"}, node


def test_schema_is_deterministic() -> None:
    assert json.dumps(recipe_schema()) == json.dumps(recipe_schema())
    assert list(recipe_schema()["definitions"]) == sorted(recipe_schema()["definitions"])


@pytest.mark.parametrize("name", SHIPPED_SPECS)
def test_composed_shipped_specs_validate(full: jsonschema.Draft7Validator, name: str) -> None:
    assert _errors(full, compose(SPECS / f"{name}.toml").data) == []


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.toml")), ids=lambda p: str(p.relative_to(SPECS)))
def test_every_spec_file_validates_as_written(file: jsonschema.Draft7Validator, path: Any) -> None:
    assert _errors(file, tomllib.loads(path.read_text(encoding="utf-8"))) == []


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
def test_broken_trees_fail_at_the_broken_key(full: jsonschema.Draft7Validator, tiny: dict[str, Any],
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
def test_broken_recipes_fail(full: jsonschema.Draft7Validator, name: str) -> None:
    assert _errors(full, compose(BROKEN / f"{name}.toml").data)


def test_file_accepts_stages_merged_by_name(file: jsonschema.Draft7Validator,
                                            full: jsonschema.Draft7Validator) -> None:
    fragment = {"stages": [{"name": "sft", "nodes": 4, "lr": {"start": 5e-6}}]}
    assert _errors(file, fragment) == []
    assert _errors(full, fragment)
    assert _errors(file, {"stages": [{"name": "sft", "nodez": 4}]})
    assert _errors(file, {"stages": [{"name": "sft", "nodes": "4"}]})
    # with its kind, an entry has only that kind's keys; without a name it overrides nothing
    assert _errors(file, {"stages": [{"name": "sft", "kind": "sft", "beta": 5.0}]})
    assert _errors(file, {"stages": [{"kind": "sft"}]})


def test_file_requires_only_stage_names() -> None:
    """A file's missing keys may come from what it extends or includes; a stage is merged by its name."""
    # `if` requires the tag its branch is for: it tests, it does not demand
    required = [node["required"] for node in _walk(recipe_schema(), skip=("if",)) if "required" in node]
    assert required == [["name"]]
    assert recipe_schema(composed=True)["required"] == ["recipe", "model", "tokenizer", "cluster", "stages"]


@pytest.mark.parametrize("union", ["Stage", "Schedule"])
def test_editors_can_complete_every_key_of_a_union(union: str) -> None:
    """taplo completes and documents keys through `$ref` and `anyOf`, not through `if`/`then`."""
    defs = recipe_schema()["definitions"]
    listed = defs[union]["anyOf"]
    assert listed[-1] is True  # and so validates nothing
    keys = {key for ref in listed[:-1] for key in defs[ref["$ref"].rsplit("/", 1)[1]]["properties"]}
    classes = {branch["then"]["$ref"].rsplit("/", 1)[1] for branch in defs[union]["allOf"]}
    assert keys == {key for name in classes for key in defs[name]["properties"]}


def test_every_property_is_described() -> None:
    for schema in (recipe_schema(), recipe_schema(composed=True)):
        for node in _walk(schema):
            if node.get("type") == "object" and "properties" in node:
                assert node["description"].strip()
                for key, prop in node["properties"].items():
                    assert isinstance(prop.get("description"), str) and prop["description"].strip(), key


def test_defaults_satisfy_their_own_schema() -> None:
    schema = recipe_schema(composed=True)
    checked = 0
    for node in _walk(schema):
        for key, prop in node.get("properties", {}).items():
            if "default" in prop:
                own = jsonschema.Draft7Validator({**prop, "definitions": schema["definitions"]})
                assert list(own.iter_errors(prop["default"])) == [], key
                checked += 1
    assert checked > 50


def test_keys_types_and_checks_come_from_the_fields() -> None:
    defs = recipe_schema()["definitions"]
    stage = defs["PretrainStage"]["properties"]
    assert "from" in stage and "from_" not in stage
    assert stage["kind"]["const"] == "pretrain"
    assert stage["name"]["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    assert stage["tokens"]["anyOf"][2]["pattern"]  # "50B"
    assert stage["tokens"]["exclusiveMinimum"] == 0
    assert stage["lr"]["allOf"] == [{"$ref": "#/definitions/Schedule"}]
    assert {"if": {"properties": {"schedule": {"const": "cosine"}}, "required": ["schedule"]},
            "then": {"$ref": "#/definitions/CosineSchedule"}} in defs["Schedule"]["allOf"]
    override = defs["StageOverride"]["properties"]
    assert "kind" not in override and override["loss"]["anyOf"][1]["enum"] == ["dpo_norm", "dpo"]
    assert override["nodes"]["exclusiveMinimum"] == 0
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


@pytest.mark.parametrize("args", [[], ["--composed"]], ids=["file", "composed"])
def test_cli_prints_the_schema(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "olmo2spec.cli", "schema", *args], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == recipe_schema(composed=bool(args))


def _schema_cli(*args: str, cwd: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olmo2spec.cli", "schema", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_output_file(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("old", encoding="utf-8")
    assert _schema_cli("-o", "old.json", cwd=tmp_path).returncode == 0
    assert json.loads((tmp_path / "old.json").read_text(encoding="utf-8")) == recipe_schema()
    dash = _schema_cli("-o", "-", cwd=tmp_path)  # stdout, as everywhere
    assert dash.returncode == 0 and json.loads(dash.stdout) == recipe_schema()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_cli_output_keeps_links_and_special_files(tmp_path: Path) -> None:
    """A link is written through, not replaced; a FIFO (or /dev/stdout) is written, never renamed over."""
    (tmp_path / "link.json").symlink_to("real.json")
    assert _schema_cli("-o", "link.json", cwd=tmp_path).returncode == 0
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text(encoding="utf-8")) == recipe_schema()
    os.mkfifo(tmp_path / "fifo")
    with open(tmp_path / "read.json", "wb") as out:
        reader = subprocess.Popen(["cat", str(tmp_path / "fifo")], stdout=out)
        assert _schema_cli("-o", "fifo", cwd=tmp_path).returncode == 0
        reader.wait(timeout=30)
    assert (tmp_path / "fifo").is_fifo()
    assert json.loads((tmp_path / "read.json").read_text(encoding="utf-8")) == recipe_schema()


@pytest.mark.parametrize("target", ["", "missing-dir/schema.json", "a-dir", "a-dir/", "new-dir/"])
def test_cli_bad_output_is_a_clear_error(tmp_path: Path, target: str) -> None:
    (tmp_path / "a-dir").mkdir()
    result = _schema_cli("-o", target, cwd=tmp_path)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir"] and not list((tmp_path / "a-dir").iterdir())
