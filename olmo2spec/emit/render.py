"""Jinja environments for the bundle's templates.

Shell templates quote by construction: every `{{ value }}` passes through `shlex.quote` (the
environment's `finalize`), so no value from a recipe reaches a shell unquoted, whatever it
holds. Text that is shell syntax on purpose is built by the view as `Shell` and passes
through as written. Both environments use StrictUndefined and byte-stable whitespace.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from typing import Any

import jinja2

from olmo2spec.spec.quantity import format_tokens

__all__ = ["Shell", "shell_env", "text_env", "render"]


class Shell(str):
    """A string that is already shell syntax (built by the view from safe parts); not quoted again."""


def _quote(value: Any) -> str:
    if isinstance(value, Shell):
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return shlex.quote(str(value))


def _make(finalize: Any) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("olmo2spec.emit", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=finalize,
    )


def _comment(value: Any) -> Shell:
    """Text for a `#` comment: one line, whatever it holds."""
    return Shell(" ".join(str(value).split()))


@cache
def shell_env() -> jinja2.Environment:
    env = _make(_quote)
    env.filters["comment"] = _comment
    return env


@cache
def text_env() -> jinja2.Environment:
    env = _make(None)
    env.filters["json"] = lambda v: json.dumps(v)  # a Python/JSON string literal
    env.filters["thousands"] = lambda v: f"{v:,.0f}" if isinstance(v, float) and v.is_integer() else f"{v:,}"
    env.filters["num"] = lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    env.filters["sig"] = lambda v, n=3: f"{v:.{n}g}"
    env.filters["tokens"] = format_tokens
    env.filters["oneline"] = lambda v: " ".join(str(v).split())
    return env


def render(template: str, **context: Any) -> str:
    """Render `templates/<template>`; shell scripts (.sh, .sbatch) quote every value."""
    shell = template.endswith((".sh.j2", ".sbatch.j2"))
    return (shell_env() if shell else text_env()).get_template(template).render(**context)
