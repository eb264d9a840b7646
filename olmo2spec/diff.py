"""`olmo2spec diff`: what differs between two resolved plans, field by field.

Plans are compared as trees, not as text: stages, runs and mix rows are matched by their
name (mix rows by source), so a stage added in the middle shows as one new stage rather than
as every later stage shifted by one.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from olmo2spec.plan.plan import Plan, to_dict
from olmo2spec.terminal import printable

__all__ = ["diff_plans", "render_diff", "ABSENT"]

ABSENT = "—"
"""Shown for a field one plan has and the other lacks."""

Row = tuple[str, str, str]
Key = tuple[str, ...]

_SKIP: set[Key] = {("olmo2spec_version",)}  # the tool's version is not a difference between recipes
_ITEM_KEYS = ("name", "source")  # stages, runs and mixes by name; mix rows and groups by source
_MISSING = object()


def diff_plans(a: Plan, b: Plan) -> list[Row]:
    """Rows (field, value in `a`, value in `b`) for every leaf that differs, in `a`'s order then `b`'s."""
    left, right = _flatten(to_dict(a)), _flatten(to_dict(b))
    paths = [*left, *(p for p in right if p not in left)]
    rows = []
    for path in paths:
        va, vb = left.get(path, _MISSING), right.get(path, _MISSING)
        if not _same(va, vb):
            rows.append((".".join(path), *_show_pair(va, vb)))
    return rows


def render_diff(rows: list[Row], name_a: str, name_b: str, console: Console) -> None:
    """Print the rows as a table titled with both names, or "no differences"."""
    if not rows:
        console.print("no differences")
        return
    title = f"{name_a} -> {name_b}: {len(rows)} difference{'s' * (len(rows) != 1)}"
    table = Table(title=Text(printable(title)), title_justify="left", title_style="bold", header_style="bold cyan")
    table.add_column("field")
    table.add_column("A", justify="right")
    table.add_column("B", justify="right")
    for row in rows:
        table.add_row(*(Text(printable(cell)) for cell in row))  # Text: values like ["a"] are not rich markup
    console.print(table)


def _flatten(value: Any, path: Key = (), out: dict[Key, Any] | None = None) -> dict[Key, Any]:
    """Leaves by dotted path; tables and keyed lists are walked, everything else is one value."""
    out = {} if out is None else out
    if path in _SKIP:
        return out
    key = _item_key(value)
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, path + (str(k),), out)
    elif key is not None:
        for item in value:
            _flatten(item, path + (item[key],), out)
    else:
        out[path] = value
    return out


def _item_key(value: Any) -> str | None:
    """The field that names every item of a list of tables uniquely, if there is one."""
    if not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
        return None
    for key in _ITEM_KEYS:
        names = [item.get(key) for item in value]
        if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
            return key
    return None


def _same(a: Any, b: Any) -> bool:
    # `True == 1` in Python; in a plan a flag turning into a count is a difference.
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _show_pair(a: Any, b: Any) -> tuple[str, str]:
    shown_a, shown_b = _show(a), _show(b)
    if shown_a == shown_b:  # differ beyond 6 digits: show them in full rather than as equal
        return repr(a), repr(b)
    return shown_a, shown_b


def _show(value: Any) -> str:
    if value is _MISSING:
        return ABSENT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, ensure_ascii=False)
