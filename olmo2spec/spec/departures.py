"""`[[departures]]`: where a recipe knowingly departs from the paper, and which artifact it follows instead.

A departure names a recipe field; the value shown beside the paper's is read from the recipe itself,
so the table `explain` prints can never drift from what the recipe does.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from olmo2spec.spec.fields import SpecValueError, doc

__all__ = ["DepartureSpec", "FieldNotFound", "resolve_field", "show_value"]


def _one_line(_inst: object, _attr: object, value: str) -> None:
    if not value.strip() or any(c < " " or c == "\x7f" for c in value):
        raise SpecValueError("must be non-empty text on one line", 'e.g. source = "allenai/OLMo configs/..."')


@attrs.frozen(kw_only=True)
class DepartureSpec:
    """One value that follows the released runs rather than the paper's text."""

    field: str = doc("The recipe field that departs, dotted as `--set` writes it, stages by name "
                     "(e.g. 'optimizer.weight_decay', 'stages.pretrain.lr.warmup_steps').", validator=_one_line)
    paper: str = doc("What the paper gives for it, as text (e.g. '0.1', '2000 steps').", validator=_one_line)
    source: str = doc("The artifact the recipe follows instead: repository and path "
                      "(e.g. 'allenai/OLMo configs/official-0425/OLMo2-1B-stage1.yaml').", validator=_one_line)
    note: str = doc("Why, or what else to know (free text).", default="")


class FieldNotFound(LookupError):
    """A departure's field names nothing in the recipe; the message says which part and what is there."""

    def __init__(self, message: str, known: list[str], part: str = "") -> None:
        super().__init__(message)
        self.known = known
        self.part = part


def _keys(cls: type) -> dict[str, str]:
    """TOML key -> attribute name (`from` is the attribute `from_`)."""
    return {str(a.metadata.get("key", a.name)): a.name for a in attrs.fields(cls)}


def _named(items: dict[str, Any], parts: list[str], i: int) -> tuple[Any, int]:
    """The item whose name is the longest run of dotted parts from `i` (names may hold dots)."""
    for j in range(len(parts), i, -1):
        name = ".".join(parts[i:j])
        if name in items:
            return items[name], j
    raise FieldNotFound(f"no {parts[i - 1][:-1] if parts[i - 1].endswith('s') else parts[i - 1]} "
                        f"named {parts[i]!r}", sorted(items), parts[i])


def resolve_field(recipe: object, field: str) -> Any:
    """The value `field` (dotted; stages, sources and mixes by name) has in `recipe`.

    Raises:
        FieldNotFound: when a part names nothing, or the field is a whole table rather than a value.
    """
    parts = field.split(".")
    node: Any = recipe
    i = 0
    while i < len(parts):
        part = parts[i]
        if attrs.has(type(node)):
            keys = _keys(type(node))
            if part not in keys:
                raise FieldNotFound(f"{'.'.join(parts[:i]) or 'the recipe'} has no key {part!r}", sorted(keys), part)
            node = getattr(node, keys[part])
            i += 1
            if isinstance(node, list) and node and all(attrs.has(type(s)) and hasattr(s, "name") for s in node):
                if i == len(parts):
                    raise FieldNotFound(f"{field!r} is a list of tables, not a value", [])
                node, i = _named({s.name: s for s in node}, parts, i)
        elif isinstance(node, dict):
            node, i = _named(node, parts, i)
        else:
            raise FieldNotFound(f"{'.'.join(parts[:i])} is a value, not a table", [])
    if attrs.has(type(node)) or isinstance(node, dict):
        raise FieldNotFound(f"{field!r} is a table, not a value: name one of its keys",
                            sorted(_keys(type(node)) if attrs.has(type(node)) else node))
    return node


def show_value(value: Any) -> str:
    """A value as a recipe writes it: 4000 as 4,000, 0.1 as 0.1, lists as TOML lists, none as 'not set'."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
