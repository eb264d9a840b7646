"""TOML tree -> typed `Recipe`, with every problem turned into a located `Diagnostic`.

cattrs does the structuring (with `forbid_extra_keys`, since a typo in a recipe must fail)
and collects failures into an exception group; `_flatten` walks that group back into
(path, problem) pairs. Primitive hooks are strict: TOML has real types, so `d_model = "4096"`
is a mistake to report, not a string to coerce.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from olmo2spec.kinds import spec_classes
from olmo2spec.spec.compose import Composed
from olmo2spec.spec.diagnostics import Diagnostic, Path, Severity, dotted
from olmo2spec.spec.fields import SpecValueError, finite
from olmo2spec.spec.quantity import parse_tokens
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.schedules import SCHEDULES, Schedule
from olmo2spec.spec.stages import Stage
from olmo2spec.spec.types import AutoInt, Inherit, Share, Tokens, parse_share

__all__ = ["structure_recipe", "toml_key", "toml_keys", "converter", "stage_names"]


class _TypeMismatch(SpecValueError):
    def __init__(self, expected: str, value: Any, example: str) -> None:
        super().__init__(f"expected {expected} (got {_show(value)})", f"write it like {example}", code="E012")


class _Missing(SpecValueError):
    def __init__(self, hint: str = "") -> None:
        super().__init__("required key is missing", hint, code="E011")


class _AtKey(SpecValueError):
    """A problem with one key of the value being structured (e.g. a stage's `kind`)."""

    def __init__(self, key: str, error: SpecValueError) -> None:
        super().__init__(str(error), error.hint, error.code)
        self.key = key


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()  # as TOML writes it
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def toml_key(attribute: attrs.Attribute[Any]) -> str:
    """The key a recipe writes for an attrs field (`from_` is written `from`)."""
    return str(attribute.metadata.get("key", attribute.name))


def toml_keys(cls: type) -> list[str]:
    return [toml_key(a) for a in attrs.fields(cls)]


# -- strict primitive hooks -----------------------------------------------------------------
_INT64 = (-(2**63), 2**63 - 1)


def _int64(value: int) -> int:
    """TOML integers are 64-bit; tomllib reads longer ones, which later overflow floats (10**400)."""
    if not _INT64[0] <= value <= _INT64[1]:
        raise SpecValueError(f"{_show(value)} does not fit in a 64-bit integer",
                             "TOML integers lie between -2**63 and 2**63-1")
    return value


def _int(value: Any, _t: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):  # 4096.0 too: TOML has real integers
        raise _TypeMismatch("an integer", value, "4096")
    return _int64(value)


def _float(value: Any, _t: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _TypeMismatch("a number", value, "3e-4")
    return finite(float(_int64(value) if isinstance(value, int) else value))


def _str(value: Any, _t: Any) -> str:
    if not isinstance(value, str):
        raise _TypeMismatch("a string", value, "\"text\" (in quotes)")
    return value


def _bool(value: Any, _t: Any) -> bool:
    if not isinstance(value, bool):
        raise _TypeMismatch("true or false", value, "true")
    return value


def _tokens(value: Any, _t: Any) -> int:
    try:
        count = parse_tokens(value)
    except ValueError as exc:
        raise SpecValueError(str(exc), "write token counts like \"50B\", \"3.895T\" or 5e12", "E012") from None
    return _int64(count)


def _share(value: Any, _t: Any) -> Share:
    try:
        return parse_share(value)
    except ValueError as exc:
        raise SpecValueError(str(exc), "e.g. dclm = 3.23 or stackexchange = \"2x\"", "E012") from None


def _auto_int(value: Any, _t: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        raise _TypeMismatch("an integer or \"auto\"", value, "2 or \"auto\"")
    return _int64(value)


def _inherit(value: Any, _t: Any) -> float | str:
    if value == "inherit":
        return "inherit"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _TypeMismatch("a number or \"inherit\"", value, "3e-4 or \"inherit\"")
    return _float(value, float)


_TABLE_HINT = "write a [table] section, or an inline table { key = value, ... }"
_LIST_EXAMPLES: dict[Any, str] = {
    int: "[42, 42069]", float: "[0.9, 0.95]", str: "[\"a\", \"b\"]", list[str]: "[[\"a\"], [\"a\", \"b\"]]",
    Stage: "[[stages]] tables, one per stage",
}


def _is_container(t: Any) -> bool:
    origin: Any = get_origin(t)
    return origin is list or origin is dict


def _container(t: Any) -> Callable[[Any, Any], Any]:
    """Lists and tables, strictly: a string is not a list of its characters, nor a table a list of its keys."""
    origin: Any = get_origin(t)
    is_list = origin is list
    item_type = get_args(t)[0 if is_list else 1]

    def structure(value: Any, _t: Any) -> Any:
        if is_list and not isinstance(value, list):
            raise _TypeMismatch("a list", value, _LIST_EXAMPLES.get(item_type, "[...]"))
        if not is_list and not isinstance(value, dict):
            raise SpecValueError(f"expected a table (got {_show(value)})", _TABLE_HINT, "E012")
        out: dict[Any, Any] = {}
        errors: list[Exception] = []
        for key, item in (enumerate(value) if is_list else value.items()):
            try:
                out[key] = converter.structure(item, item_type)
            except Exception as exc:  # collected, like cattrs' own detailed validation
                exc.add_note(IterableValidationNote(f"Structuring {t} @ {key!r}", key, item_type))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return list(out.values()) if is_list else out

    return structure


def _checked(attribute: attrs.Attribute[Any]) -> Callable[[Any, Any], Any]:
    """Structure a field and run its validator at once, so that bad values are reported with bad types."""
    validator = attribute.validator
    assert validator is not None

    def structure(value: Any, t: Any) -> Any:
        result = converter.structure(value, t)
        validator(None, attribute, result)  # spec validators look at the value only
        return result

    return structure


def _dispatch(tag: str, classes: dict[str, type], what: str) -> Callable[[Any, Any], Any]:
    """Structure a tagged union: the value of `tag` names the class (stage `kind`, `schedule`)."""

    def structure(value: Any, _t: Any) -> Any:
        if not isinstance(value, dict):
            raise _TypeMismatch(f"a table for {what}", value, f"{{ {tag} = \"{next(iter(classes))}\", ... }}")
        choices = ", ".join(classes)
        if tag not in value:
            raise _AtKey(tag, _Missing(f"set {tag} to one of: {choices}"))
        kind = value[tag]
        if kind not in classes:
            close = difflib.get_close_matches(str(kind), list(classes), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of: {choices}"
            raise _AtKey(tag, SpecValueError(f"unknown {what} {tag} {_show(kind)}", hint))
        return converter.structure(value, classes[kind])

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for t, hook in ((int, _int), (float, _float), (str, _str), (bool, _bool), (Tokens, _tokens),
                    (Share, _share), (AutoInt, _auto_int), (Inherit, _inherit)):
        conv.register_structure_hook(t, hook)
    conv.register_structure_hook(Stage, _dispatch("kind", spec_classes(), "stage"))
    conv.register_structure_hook(Schedule, _dispatch("schedule", SCHEDULES, "learning-rate"))

    conv.register_structure_hook_factory(_is_container, _container)

    def attrs_hook(cls: type) -> Any:
        overrides = {
            a.name: override(rename=toml_key(a) if "key" in a.metadata else None,
                             struct_hook=_checked(a) if a.validator is not None else None)
            for a in attrs.fields(cls) if "key" in a.metadata or a.validator is not None
        }
        fn: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=True, **overrides)  # type: ignore[arg-type]

        def structure(value: Any, t: Any) -> Any:
            if not isinstance(value, dict):
                raise SpecValueError(f"expected a table (got {_show(value)})", _TABLE_HINT, "E012")
            return fn(value, t)

        return structure

    conv.register_structure_hook_factory(attrs.has, attrs_hook)
    return conv


converter = _make_converter()


# -- errors back to paths -------------------------------------------------------------------
def _attr_key(cls: type | None, name: str) -> str:
    if cls is not None and attrs.has(cls):
        for a in attrs.fields(cls):
            if a.name == name:
                return toml_key(a)
    return name


def _flatten(exc: BaseException, path: Path, cls: type | None) -> Iterator[tuple[Path, BaseException, type | None]]:
    for note in getattr(exc, "__notes__", ()):
        if hasattr(note, "name"):
            path = path + (_attr_key(cls, note.name),)
        elif hasattr(note, "index"):
            path = path + (note.index,)
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        inner_cls = getattr(exc, "cl", None) if isinstance(exc, ClassValidationError) else None
        for sub in exc.exceptions:
            yield from _flatten(sub, path, inner_cls)
    else:
        yield path, exc, cls


def stage_names(data: dict[str, Any]) -> dict[int, str]:
    stages = data.get("stages")
    if not isinstance(stages, list):
        return {}
    return {i: s["name"] for i, s in enumerate(stages) if isinstance(s, dict) and isinstance(s.get("name"), str)}


def _diagnostic(path: Path, exc: BaseException, cls: type | None, composed: Composed,
                names: dict[int, str]) -> Iterator[Diagnostic]:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = toml_keys(exc.cl)
        retired: dict[str, str] = getattr(exc.cl, "RETIRED_KEYS", {})
        for key in sorted(exc.extra_fields):
            if key in retired:
                yield Diagnostic("E010", Severity.ERROR, dotted(path + (key,), names), "no longer a setting",
                                 retired[key], composed.locate(path + (key,), at_key=True))
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
            yield Diagnostic("E010", Severity.ERROR, dotted(path + (key,), names), "unknown key", hint,
                             composed.locate(path + (key,), at_key=True))
        return
    if isinstance(exc, _AtKey):
        path = path + (exc.key,)
    if isinstance(exc, KeyError):
        exc = _Missing()
    if isinstance(exc, SpecValueError):
        code, message, hint = exc.code, str(exc), exc.hint
    else:  # cattrs' own complaints (a literal mismatch, a list where a table belongs)
        code, message, hint = "E012", f"invalid value: {exc}", ""
    yield Diagnostic(code, Severity.ERROR, dotted(path, names), message, hint, composed.locate(path))


def structure_recipe(composed: Composed) -> tuple[Recipe | None, list[Diagnostic]]:
    """Build the typed recipe; on failure return None and every problem found."""
    names = stage_names(composed.data)
    with attrs.validators.disabled():  # each field's validator ran as it was structured (`_checked`)
        try:
            recipe = converter.structure(composed.data, Recipe)
        except Exception as exc:  # cattrs groups every failure in one exception
            found = [d for p, e, c in _flatten(exc, (), Recipe) for d in _diagnostic(p, e, c, composed, names)]
            return None, found
    return recipe, []

