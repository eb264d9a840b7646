"""The compiler front end as one call: file -> composed tree -> Recipe -> checks -> Plan.

The CLI and the notebooks call `check`; neither has logic of its own. Nothing here imports
torch, so checking a recipe is fast and works on a laptop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs

from olmo2spec.plan.plan import Plan
from olmo2spec.plan.resolve import resolve
from olmo2spec.spec.compose import ComposeCache, Composed, compose
from olmo2spec.spec.diagnostics import Diagnostic, Reporter, Severity, SpecError
from olmo2spec.spec.lint import lint
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.rules import check_rules
from olmo2spec.spec.structure import stage_names, structure_recipe

__all__ = ["Checked", "check", "sort_diagnostics"]


@attrs.frozen
class Checked:
    """A recipe that passed every check, its plan, and the warnings it raised."""

    composed: Composed
    recipe: Recipe
    plan: Plan
    warnings: list[Diagnostic]


def sort_diagnostics(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    """In file order, so the output reads top to bottom like the recipe."""
    def key(d: Diagnostic) -> tuple[str, int, int, str]:
        loc = d.location
        return (loc.file, loc.line, loc.col, d.code) if loc else ("~", 0, 0, d.code)
    return sorted(diagnostics, key=key)


def check(path: str | os.PathLike[str], overrides: Sequence[str] = (), *, strict: bool = False,
          cache: ComposeCache | None = None) -> Checked:
    """Compose, structure, check and resolve a recipe.

    Args:
        path: the recipe file.
        overrides: `KEY=VALUE` strings, as given to `--set`.
        strict: turn lint warnings into errors.
        cache: keeps the files' composition between calls (re-checks of one recipe under new overrides).

    Raises:
        SpecError: with every problem found (warnings included) when there is at least one error.
    """
    composed = compose(path, overrides, cache=cache)
    recipe, problems = structure_recipe(composed)
    if recipe is None:
        raise SpecError(sort_diagnostics(problems))
    report = Reporter(composed.locate, stage_names(composed.data))
    check_rules(recipe, report)
    lint(recipe, report)
    plan = None if report.has_errors else resolve(recipe, report)
    # a lint warning on a field the recipe lists in [[departures]] is acknowledged there, with its source
    acknowledged = {d.field for d in recipe.departures}
    diagnostics = [d for d in report.diagnostics
                   if not (d.severity is Severity.WARNING and d.code.startswith("W1") and d.field in acknowledged)]
    if strict:
        diagnostics = [attrs.evolve(d, severity=Severity.ERROR) for d in diagnostics]
    if plan is None or any(d.severity is Severity.ERROR for d in diagnostics):
        raise SpecError(sort_diagnostics(diagnostics))
    return Checked(composed, recipe, plan, sort_diagnostics(diagnostics))
