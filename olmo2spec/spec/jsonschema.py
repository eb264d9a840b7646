"""JSON Schema (draft 2020-12) of recipe files, generated from the spec's attrs classes.

Editors use it for completion, hover docs and red squiggles (`olmo2spec schema`). Nothing here
is written per field: keys, types, defaults, descriptions and simple bounds all come from the
attrs classes, so the schema cannot drift from the checker. It is looser than the checker
(cross-field rules and custom validators stay in Python), never stricter.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import attrs

from olmo2spec.spec.fields import SAFE_NAME, each, in_range, non_negative, one_of, positive, safe_name, unit_interval
from olmo2spec.spec.quantity import QUANTITY_PATTERN
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.schedules import SCHEDULES, Schedule
from olmo2spec.spec.stages import STAGE_KINDS, Stage
from olmo2spec.spec.structure import toml_key
from olmo2spec.spec.types import SHARE_REPEAT_PATTERN, AutoInt, Inherit, Share, Tokens

__all__ = ["recipe_schema", "DRAFT"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
Schema = dict[str, Any]

_PRIMITIVES: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}

# Value types written in more than one form (see types.py); functions, so every use gets a fresh dict.
_SPECIAL: tuple[tuple[Any, Callable[[], Schema]], ...] = (
    (Tokens, lambda: {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "number"},
                                {"type": "string", "pattern": QUANTITY_PATTERN}]}),
    (Share, lambda: {"anyOf": [{"type": "number"}, {"type": "string", "pattern": SHARE_REPEAT_PATTERN}]}),
    (AutoInt, lambda: {"anyOf": [{"type": "integer"}, {"const": "auto"}]}),
    (Inherit, lambda: {"anyOf": [{"type": "number"}, {"const": "inherit"}]}),
)

# Tagged unions: (union, tag key, classes by tag value).
_TAGGED: tuple[tuple[Any, str, dict[str, type]], ...] = (
    (Stage, "kind", STAGE_KINDS),
    (Schedule, "schedule", SCHEDULES),
)

# Validators are matched by identity (`is`), not by name or equality.
_BOUNDS: tuple[tuple[Any, Schema], ...] = (
    (positive, {"exclusiveMinimum": 0}),
    (non_negative, {"minimum": 0}),
    (unit_interval, {"minimum": 0, "maximum": 1}),
    (safe_name, {"pattern": SAFE_NAME}),
)

# Every closure a validator factory returns shares its code object: identity says which factory made it.
_ONE_OF = one_of(()).__code__
_IN_RANGE = in_range(0, 1).__code__
_EACH = each(positive).__code__

_EXTENDS_DOC = ("Recipe file this one builds on, relative to this file; "
                "its includes and this file's own values win over it.")
_INCLUDE_DOC = ("Fragments merged in after `extends` and before this file's own values, "
                "relative to this file; tables merge, `[[stages]]` merge by name.")


def recipe_schema(partial: bool = False) -> Schema:
    """The JSON Schema of a recipe file.

    Args:
        partial: require no keys anywhere, and accept stages and schedules without their tag:
            for fragments that are extended or included, whose tables are merged into others.
    """
    builder = _Builder(partial)
    root = builder.object(Recipe)
    root["properties"]["extends"] = {"description": _EXTENDS_DOC, "type": "string"}
    root["properties"]["include"] = {"description": _INCLUDE_DOC, "type": "array", "items": {"type": "string"}}
    return {
        "$schema": DRAFT,
        "title": "olmo2spec recipe" + (" fragment" if partial else ""),
        **root,
        "$defs": dict(sorted(builder.defs.items())),
    }


def _doc_line(cls: type) -> str:
    # cls.__doc__, not inspect.getdoc: a class without a docstring must not borrow its base's.
    text = inspect.cleandoc(cls.__doc__ or cls.__name__)
    return text.splitlines()[0]


class _Builder:
    """Walks attrs classes, collecting each one's schema in `defs` by class name."""

    def __init__(self, partial: bool) -> None:
        self.partial = partial
        self.defs: dict[str, Schema] = {}
        self.owners: dict[str, type] = {}

    def ref(self, cls: type) -> Schema:
        name = cls.__name__
        if self.owners.setdefault(name, cls) is not cls:
            raise TypeError(f"two spec classes are named {name}; $defs needs unique names")
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: a class that refers to itself must not recurse forever
            self.defs[name] = self.object(cls)
        return {"$ref": f"#/$defs/{name}"}

    def object(self, cls: type) -> Schema:
        hints = get_type_hints(cls)
        fields = attrs.fields(cls)
        schema: Schema = {
            "description": _doc_line(cls),
            "type": "object",
            "properties": {toml_key(a): self.field(a, hints[a.name]) for a in fields},
            "additionalProperties": False,
        }
        required = [toml_key(a) for a in fields if a.default is attrs.NOTHING]
        if required and not self.partial:
            schema["required"] = required
        return schema

    def field(self, attribute: attrs.Attribute[Any], hint: Any) -> Schema:
        schema: Schema = {"description": str(attribute.metadata.get("doc", "")), **self.schema_of(hint)}
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
        for union, _tag, classes in _TAGGED:
            if hint == union:
                return self.tagged(classes)
        if attrs.has(hint):
            return self.ref(hint)
        return self.generic(hint)

    def tagged(self, classes: dict[str, type]) -> Schema:
        refs = [self.ref(cls) for cls in classes.values()]
        # The tag's `const` makes exactly one class match a whole value. In a fragment the tag may be
        # missing (stages merge by name, tables merge key by key), so any class may match.
        return {"anyOf": refs} if self.partial else {"oneOf": refs}

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
