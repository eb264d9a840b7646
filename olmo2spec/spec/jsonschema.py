"""JSON Schema (draft 7) of recipe files, generated from the spec's attrs classes.

Editors use it for completion, hover docs and red squiggles (`olmo2spec schema`). Nothing here
is written per field (but which tables are keyed by names, a rule of the checker): keys, types,
defaults, descriptions and simple bounds all come from the attrs classes, so the schema cannot
drift from the checker. It is looser than the checker (cross-field rules and custom validators
stay in Python), never stricter.

Two schemas. The file schema describes one file as people write it: an editor sees that file,
not the recipe composed from it, so anything `extends` or `include` may supply is optional and a
`[[stages]]` entry without `kind` overrides the stage of its `name`. The composed schema describes
the tree after composition, where every required key is there.

Draft 7, and only its keywords: taplo (the engine of Even Better TOML) ignores the 2019-09 and
2020-12 ones (`unevaluatedProperties`, `prefixItems`, `dependentRequired`) and, like draft 7, the
siblings of a `$ref`, so a `$ref` stands alone and is wrapped in `allOf` where a field adds to it.
"""

from __future__ import annotations

import inspect
import json
import math
import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import attrs

from olmo2spec.kinds import spec_classes
from olmo2spec.spec.fields import (
    MAX_SEED,
    SAFE_NAME,
    each,
    in_range,
    non_negative,
    one_of,
    positive,
    safe_name,
    seed_range,
    share_of_one,
    unit_interval,
)
from olmo2spec.spec.quantity import QUANTITY_PATTERN
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.schedules import SCHEDULES, Schedule
from olmo2spec.spec.stages import Stage
from olmo2spec.spec.structure import toml_key
from olmo2spec.spec.types import SHARE_REPEAT_PATTERN, AutoInt, Inherit, Share, Tokens

__all__ = ["recipe_schema", "DRAFT"]

DRAFT = "http://json-schema.org/draft-07/schema#"
Schema = dict[str, Any]

_PRIMITIVES: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}

# Value types written in more than one form (see types.py); functions, so every use gets a fresh dict.
_SPECIAL: tuple[tuple[Any, Callable[[], Schema]], ...] = (
    (Tokens, lambda: {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "number"},
                                {"type": "string", "pattern": QUANTITY_PATTERN}]}),
    (Share, lambda: {"anyOf": [{"type": "number", "minimum": 0},
                               {"type": "string", "pattern": SHARE_REPEAT_PATTERN}]}),
    (AutoInt, lambda: {"anyOf": [{"type": "integer"}, {"const": "auto"}]}),
    (Inherit, lambda: {"anyOf": [{"type": "number"}, {"const": "inherit"}]}),
)


@attrs.frozen
class _Tagged:
    """A union of attrs classes told apart by the value of one key."""

    union: Any
    name: str
    """Its name under `definitions`."""
    tag: str
    classes: dict[str, type]
    doc: str
    override_doc: str
    """What an entry without the tag is."""
    merged_by: str | None
    """The key by which a file's entry overrides one of an extended or included file, if any."""


_TAGGED: tuple[_Tagged, ...] = (
    _Tagged(Stage, "Stage", "kind", spec_classes(),
            "A stage of the `kind` given; without `kind`, values for the stage of the same `name` "
            "in a file this one extends or includes.",
            "Values for the stage of the same `name` in a file this one extends or includes; "
            "the keys its kind has.", merged_by="name"),
    _Tagged(Schedule, "Schedule", "schedule", SCHEDULES,
            "A learning-rate schedule of the kind given by `schedule`; without it, values merged into "
            "the schedule of the same stage in a file this one extends or includes.",
            "Values merged into the schedule of the same stage in a file this one extends or includes; "
            "the keys its kind has.", merged_by=None),
)

# Validators are matched by identity (`is`), not by name or equality.
_BOUNDS: tuple[tuple[Any, Schema], ...] = (
    (positive, {"exclusiveMinimum": 0}),
    (non_negative, {"minimum": 0}),
    (unit_interval, {"minimum": 0, "maximum": 1}),
    (share_of_one, {"exclusiveMinimum": 0, "maximum": 1}),
    (seed_range, {"minimum": 0, "maximum": MAX_SEED}),
    (safe_name, {"pattern": SAFE_NAME}),
)

# Tables whose keys the checker holds to safe names, as they become file names (rules.check_names).
_NAMED_KEYS: tuple[tuple[type, str], ...] = ((Recipe, "sources"), (Recipe, "mixes"))

# Every closure a validator factory returns shares its code object: identity says which factory made it.
_ONE_OF = one_of(()).__code__
_IN_RANGE = in_range(0, 1).__code__
_EACH = each(positive).__code__

_EXTENDS_DOC = ("Recipe file this one builds on, relative to this file; "
                "its includes and this file's own values win over it.")
_INCLUDE_DOC = ("Fragments merged in after `extends` and before this file's own values, "
                "relative to this file; tables merge, `[[stages]]` merge by name.")


def recipe_schema(composed: bool = False) -> Schema:
    """The JSON Schema of a recipe file, or with `composed` of a recipe after composition.

    Args:
        composed: describe the tree `extends`, `include` and `--set` compose: required keys are
            required and every stage and schedule names its kind. Without it, describe one file as
            written, whose missing keys and kinds may come from the files it extends or includes.
    """
    builder = _Builder(composed)
    root = builder.object(Recipe)
    if not composed:  # composition consumes them
        root["properties"]["extends"] = {"description": _EXTENDS_DOC, "type": "string"}
        root["properties"]["include"] = {"description": _INCLUDE_DOC, "type": "array", "items": {"type": "string"}}
    return {
        "$schema": DRAFT,
        "title": "olmo2spec recipe" + (" (composed)" if composed else " file"),
        **root,
        "definitions": dict(sorted(builder.defs.items())),
    }


def _doc_line(cls: type) -> str:
    # cls.__doc__, not inspect.getdoc: a class without a docstring must not borrow its base's.
    text = inspect.cleandoc(cls.__doc__ or cls.__name__)
    return text.splitlines()[0]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


class _Builder:
    """Walks attrs classes, collecting each one's schema in `defs` by class name."""

    def __init__(self, composed: bool) -> None:
        self.composed = composed
        self.defs: dict[str, Schema] = {}
        self.owners: dict[str, Any] = {}

    def define(self, name: str, owner: Any, build: Callable[[], Schema]) -> Schema:
        """A `$ref` to `definitions/name`, built on first use."""
        if self.owners.setdefault(name, owner) is not owner:
            raise TypeError(f"two spec types are named {name}; definitions need unique names")
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: a class that refers to itself must not recurse forever
            self.defs[name] = build()
        return _ref(name)

    def object(self, cls: type) -> Schema:
        hints = get_type_hints(cls)
        fields = attrs.fields(cls)
        schema: Schema = {
            "description": _doc_line(cls),
            "type": "object",
            "properties": {toml_key(a): self.field(a, hints[a.name]) for a in fields},
            "additionalProperties": False,
        }
        for owner, key in _NAMED_KEYS:
            if owner is cls:
                schema["properties"][key]["propertyNames"] = {"pattern": SAFE_NAME}
        required = [toml_key(a) for a in fields if a.default is attrs.NOTHING]
        if required and self.composed:
            schema["required"] = required
        return schema

    def field(self, attribute: attrs.Attribute[Any], hint: Any) -> Schema:
        of = self.schema_of(hint)
        schema: Schema = {"description": str(attribute.metadata.get("doc", "")),
                          **({"allOf": [of]} if "$ref" in of else of)}
        _constrain(schema, attribute.validator)
        default = _json_default(attribute.default)
        if default is not attrs.NOTHING:
            schema["default"] = default
        return schema

    def schema_of(self, hint: Any) -> Schema:
        hint = _without_none(hint)
        for special, make in _SPECIAL:
            if hint == special:
                return make()
        for tagged in _TAGGED:
            if hint == tagged.union:
                return self.ref_tagged(tagged)
        if attrs.has(hint):
            return self.ref(hint)
        return self.generic(hint)

    def ref(self, cls: type) -> Schema:
        return self.define(cls.__name__, cls, lambda: self.object(cls))

    def ref_tagged(self, tagged: _Tagged) -> Schema:
        return self.define(tagged.name, tagged.union, lambda: self.tagged(tagged))

    def tagged(self, tagged: _Tagged) -> Schema:
        """One class per tag value, chosen by `if`/`then`: errors then point into the class that applies,
        where `oneOf` would report that no class matches the whole table."""
        tag_doc = str(attrs.fields_dict(next(iter(tagged.classes.values())))[tagged.tag].metadata.get("doc", ""))
        branches: list[Schema] = [
            {"if": {"properties": {tagged.tag: {"const": value}}, "required": [tagged.tag]},
             "then": self.ref(cls)}
            for value, cls in tagged.classes.items()
        ]
        schema: Schema = {
            "description": tagged.doc,
            "type": "object",
            "properties": {tagged.tag: {"description": tag_doc, "enum": list(tagged.classes)}},
            "allOf": branches,
        }
        if self.composed:
            schema["required"] = [tagged.tag]
        else:
            override = self.define(f"{tagged.name}Override", tagged, lambda: self.override(tagged))
            branches.append({"if": {"not": {"required": [tagged.tag]}}, "then": override})
            if tagged.merged_by:  # an entry without it overrides nothing, and a whole one has it
                schema["required"] = [tagged.merged_by]
        # For completion and hover only: editors follow `anyOf` but not `if`/`then` (taplo 0.9), and an
        # `anyOf` that ends with `true` validates nothing.
        schema["anyOf"] = [branch["then"] for branch in branches] + [True]
        return schema

    def override(self, tagged: _Tagged) -> Schema:
        """An entry without its tag: any key of any class, each typed as that class types it."""
        variants: dict[str, list[tuple[str, Schema]]] = {}
        for value, cls in tagged.classes.items():
            for key, prop in self.object(cls)["properties"].items():
                if key != tagged.tag:
                    variants.setdefault(key, []).append((value, prop))
        return {
            "description": tagged.override_doc,
            "type": "object",
            "properties": {key: _any_of(found) for key, found in variants.items()},
            "additionalProperties": False,
        }

    def generic(self, hint: Any) -> Schema:
        origin, args = get_origin(hint), get_args(hint)
        if origin is list:
            return {"type": "array", "items": self.schema_of(args[0])}
        if origin is dict:  # TOML keys are always strings
            return {"type": "object", "additionalProperties": self.schema_of(args[1])}
        if origin is Literal:
            return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        if origin in (Union, types.UnionType):
            return {"anyOf": [self.schema_of(arg) for arg in args]}
        if hint in _PRIMITIVES:
            return {"type": _PRIMITIVES[hint]}
        raise TypeError(f"no JSON Schema for the spec type {hint!r}")


def _any_of(found: list[tuple[str, Schema]]) -> Schema:
    """One key as several classes declare it: each distinct type once, each description with its kinds."""
    shapes: list[Schema] = []
    kinds_by_doc: dict[str, list[str]] = {}
    for kind, prop in found:
        shape = {k: v for k, v in prop.items() if k not in ("description", "default")}
        if shape not in shapes:
            shapes.append(shape)
        kinds_by_doc.setdefault(prop["description"], []).append(kind)
    if len(kinds_by_doc) == 1:
        description = next(iter(kinds_by_doc))
    else:
        description = " ".join(f"{', '.join(kinds)}: {doc}" for doc, kinds in kinds_by_doc.items())
    schema: Schema = {"description": description, **(shapes[0] if len(shapes) == 1 else {"anyOf": shapes})}
    defaults = {json.dumps(prop.get("default"), sort_keys=True) for _kind, prop in found}
    if len(defaults) == 1 and "default" in found[0][1]:  # every class has it, and the same
        schema["default"] = found[0][1]["default"]
    return schema


def _without_none(hint: Any) -> Any:
    """`X | None` -> `X`: TOML has no null, so a key left out takes the default."""
    if get_origin(hint) not in (Union, types.UnionType):
        return hint
    rest = tuple(arg for arg in get_args(hint) if arg is not type(None))
    return rest[0] if len(rest) == 1 else Union.__getitem__(rest)  # Union[rest], spelled so mypy reads a value


def _constrain(schema: Schema, validator: Any) -> None:
    """Add the keywords a `fields` validator implies; validators the schema cannot express add nothing."""
    if validator is None:
        return
    parts = getattr(validator, "_validators", None)  # attrs.validators.and_, made from a list of validators
    if parts is not None:
        for part in parts:
            _constrain(schema, part)
        return
    for known, keywords in _BOUNDS:
        if validator is known:
            schema.update(keywords)
            return
    code = getattr(validator, "__code__", None)
    if code is None or validator.__closure__ is None:
        return
    closed = inspect.getclosurevars(validator).nonlocals
    if code is _ONE_OF:
        schema["enum"] = list(closed["choices"])
    elif code is _IN_RANGE:
        schema.update(minimum=closed["low"], maximum=closed["high"])
    elif code is _EACH:
        inner = schema.get("items", schema.get("additionalProperties"))
        if isinstance(inner, dict):
            _constrain(inner, closed["check"])


def _json_default(default: Any) -> Any:
    """The default as a JSON value, or NOTHING when it has none (None, attrs objects, factories of self)."""
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return attrs.NOTHING
        default = default.factory()
    return default if default is not None and _is_json(default) else attrs.NOTHING


def _is_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (str, int)):  # bool is an int
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
