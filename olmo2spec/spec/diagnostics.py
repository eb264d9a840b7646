"""Diagnostics: every problem the checker finds, with where it came from and how to fix it.

Errors are collected, never raised one at a time, so a user sees every problem in one run
(cattrs' `ClassValidationError` does the same for structuring).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence

import attrs

__all__ = ["Severity", "Location", "Diagnostic", "SpecError", "Path", "dotted", "Reporter", "error_summary"]

Path = tuple[str | int, ...]
"""A path into the raw TOML tree: table keys and array indices."""

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@attrs.frozen
class Location:
    """Where a value was written: a file (or `--set`), 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@attrs.frozen
class Diagnostic:
    """One problem: a stable code, the dotted field, a message, an optional hint."""

    code: str
    severity: Severity
    field: str
    message: str
    hint: str = ""
    location: Location | None = None

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        field = f"{self.field}: " if self.field else ""
        text = f"{where}{self.severity.value}[{self.code}]: {field}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


def error_summary(diagnostics: Sequence[Diagnostic]) -> str:
    """The count printed under a recipe's errors ("2 errors, 1 warning"); "" when there is no error."""
    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    warnings = len(diagnostics) - errors
    if not errors:
        return ""
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


class SpecError(Exception):
    """Raised when a recipe has errors; holds every diagnostic found (warnings too)."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        errors = [d for d in self.diagnostics if d.severity is Severity.ERROR]
        super().__init__(f"{len(errors)} error(s) in recipe")


def dotted(path: Path, stage_names: dict[int, str] | None = None) -> str:
    """Render a path as the dotted field users read: stages are named, not numbered.

    `("stages", 0, "batch_size")` becomes `stages.pretrain.batch_size`. Keys that are not bare
    TOML keys are quoted as TOML quotes them: `stages."pre train".name`, control characters
    escaped (an error stays on one line); keys over 60 characters are cut to `...`.
    """
    def key_text(key: str) -> str:
        if not _BARE_KEY.fullmatch(key):
            key = '"' + "".join(_KEY_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " or c == "\x7f" else c)
                                for c in key) + '"'
        if len(key) <= 60:
            return key
        return key[:56] + ('..."' if key.startswith('"') else "...")

    parts: list[str] = []
    for i, key in enumerate(path):
        if isinstance(key, int):
            if i > 0 and path[i - 1] == "stages" and stage_names and key in stage_names:
                parts.append(key_text(stage_names[key]))
            else:
                parts[-1:] = [f"{parts[-1]}[{key}]"] if parts else [f"[{key}]"]
        else:
            parts.append(key_text(key))
    return ".".join(parts)


class Reporter:
    """Collects diagnostics, locating each path through `locate` (a `Composed.locate`)."""

    def __init__(self, locate: Callable[..., Location | None] | None = None,
                 stage_names: dict[int, str] | None = None) -> None:
        self.diagnostics: list[Diagnostic] = []
        self._locate = locate
        self._names = stage_names or {}

    def _add(self, severity: Severity, code: str, path: Path, message: str, hint: str, at_key: bool) -> None:
        where = self._locate(path, at_key=at_key) if self._locate else None
        self.diagnostics.append(Diagnostic(code, severity, dotted(path, self._names), message, hint, where))

    def error(self, code: str, path: Path, message: str, hint: str = "", *, at_key: bool = False) -> None:
        self._add(Severity.ERROR, code, path, message, hint, at_key)

    def warning(self, code: str, path: Path, message: str, hint: str = "", *, at_key: bool = False) -> None:
        self._add(Severity.WARNING, code, path, message, hint, at_key)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)
