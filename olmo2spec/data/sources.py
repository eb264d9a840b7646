"""Finding a source's files: `${DATA_ROOT}` substituted, globs expanded, sorted; and checking their size.

Light on purpose (no numpy): the compiler may call it. A token file holds 4 bytes per token, so
a source's token count is the sum of its files' sizes / 4, known from `os.stat` alone.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from olmo2spec.spec.diagnostics import Severity
from olmo2spec.spec.mixes import SourceSpec

__all__ = [
    "DATA_ROOT_VAR", "DataRootError", "Problem", "data_root", "expand", "glob_pattern", "resolve_patterns",
    "token_files", "raw_files", "source_token_count", "check_declared_counts", "GLOB_CHARS", "TOLERANCE",
    "ERROR_FACTOR",
]

DATA_ROOT_VAR = "DATA_ROOT"
_PLACEHOLDER = "${DATA_ROOT}"
GLOB_CHARS = "*?["
TOKEN_BYTES = 4

TOLERANCE = 0.01
"""Files within 1% of the declared count are fine; further off is a warning."""
ERROR_FACTOR = 2.0
"""Files holding less than half or more than twice the declared count are an error."""


class DataRootError(ValueError):
    """A path needs `${DATA_ROOT}` and none was given."""


@attrs.frozen
class Problem:
    """A mismatch between a source as declared and its files."""

    severity: Severity
    source: str
    message: str

    def render(self) -> str:
        return f"{self.severity.value}: sources.{self.source}: {self.message}"


def data_root(explicit: str | os.PathLike[str] | None = None, plan_root: str = "env") -> Path | None:
    """Where `${DATA_ROOT}` points: `explicit`, else the plan's `[data] root` unless it is "env",
    else the DATA_ROOT environment variable; None when none is set."""
    if explicit is not None and str(explicit):
        return Path(explicit)
    if plan_root and plan_root != "env":
        return Path(plan_root)
    value = os.environ.get(DATA_ROOT_VAR)
    return Path(value) if value else None


def expand(pattern: str, root: str | os.PathLike[str] | None = None, *, what: str = "a path") -> str:
    """`pattern` with `${DATA_ROOT}` replaced by `root` (default: the DATA_ROOT environment variable).

    Raises:
        DataRootError: when the pattern uses `${DATA_ROOT}` and no root is given or set.
    """
    return _substitute(pattern, root, what, lambda path: path)


def glob_pattern(pattern: str, root: str | os.PathLike[str] | None = None, *, what: str = "a path") -> str:
    """`expand` for globbing: the root's own `*`, `?` and `[` stand for themselves (`glob.escape`), so a
    directory named `runs [v2]` is found; only the recipe's part of the pattern is a glob.

    Raises:
        DataRootError: when the pattern uses `${DATA_ROOT}` and no root is given or set.
    """
    return _substitute(pattern, root, what, glob.escape)


def _substitute(pattern: str, root: str | os.PathLike[str] | None, what: str, escape: Callable[[str], str]) -> str:
    if _PLACEHOLDER not in pattern:
        return pattern
    resolved = data_root(root)
    if resolved is None:
        raise DataRootError(f"{what} uses {_PLACEHOLDER} ({pattern}) but DATA_ROOT is not set: "
                            f"export DATA_ROOT=/path/to/data")
    return pattern.replace(_PLACEHOLDER, escape(str(resolved).rstrip("/") or "/"))


def resolve_patterns(patterns: Iterable[str], root: str | os.PathLike[str] | None = None, *,
                     what: str = "a path") -> list[Path]:
    """The files (not directories) the patterns match, each once, sorted by path.

    Globs are expanded like the shell's (`*` stays in one directory, `**` crosses them, hidden files
    are not matched); a pattern without glob characters matches the file if it exists.

    Raises:
        DataRootError: when a pattern uses `${DATA_ROOT}` and no root is given or set.
    """
    found: set[str] = set()
    for pattern in patterns:
        found.update(p for p in glob.glob(glob_pattern(pattern, root, what=what), recursive=True) if os.path.isfile(p))
    return [Path(p) for p in sorted(found)]


def token_files(name: str, source: SourceSpec, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The token files of source `name` (its `paths`)."""
    return resolve_patterns(source.paths, root, what=f"source {name}'s paths")


def raw_files(name: str, source: SourceSpec, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The raw JSONL files of source `name` (its `raw`)."""
    return resolve_patterns(source.raw, root, what=f"source {name}'s raw files")


def source_token_count(files: Iterable[str | os.PathLike[str]]) -> int:
    """Tokens in token files: the sum of their sizes / 4."""
    return sum(os.stat(f).st_size for f in files) // TOKEN_BYTES


def _sources_of(plan_or_sources: object) -> Mapping[str, SourceSpec]:
    sources = getattr(plan_or_sources, "sources", plan_or_sources)
    if not isinstance(sources, Mapping):
        raise TypeError(f"expected a Plan or a mapping of sources, got {type(plan_or_sources).__name__}")
    return sources


def check_declared_counts(plan_or_sources: object, root: str | os.PathLike[str] | None = None,
                          names: Sequence[str] | None = None) -> list[Problem]:
    """Compare each source's declared `tokens` with its token files, when it has any.

    A source whose `paths` match no file yet has nothing to compare (it may not be prepared).
    Within `TOLERANCE` (1%) of the declared count is fine; further off is a warning naming both
    counts; files with less than 1/`ERROR_FACTOR` (half) or more than `ERROR_FACTOR` (twice) the
    declared count are an error (wrong files, or a wrong declaration the mix budgets rest on).

    Args:
        plan_or_sources: a Plan, or a mapping source name -> SourceSpec.
        root: what `${DATA_ROOT}` stands for (default: the DATA_ROOT environment variable).
        names: only these sources (default: every one, sorted by name).

    Raises:
        DataRootError: when a source's paths use `${DATA_ROOT}` and no root is given or set.
    """
    sources = _sources_of(plan_or_sources)
    problems: list[Problem] = []
    for name in sorted(sources) if names is None else names:
        source = sources[name]
        files = token_files(name, source, root)
        if not files:
            continue
        actual, declared = source_token_count(files), int(source.tokens)
        if abs(actual - declared) <= TOLERANCE * declared:
            continue
        far_off = actual * ERROR_FACTOR < declared or actual > declared * ERROR_FACTOR
        severity = Severity.ERROR if far_off else Severity.WARNING
        ratio = f"{actual / declared:.3g}x" if declared else "declared 0"
        files_hold = "1 token file holds" if len(files) == 1 else f"{len(files):,} token files hold"
        problems.append(Problem(severity, name, f"{files_hold} {actual:,} tokens, declared {declared:,} ({ratio}); "
                                                f"fix `tokens` or the files"))
    return problems
