"""A microanneal being chosen: the recipe's microanneal stage under `--set` overrides, re-checked by the compiler.

No widgets here (the runner in `microanneals` draws them) and no arithmetic: the plan, its mixes and
every diagnostic come from `olmo2spec.compiler.check` with the overrides `olmo2spec check --set`
would apply. The recipe's microanneal stage is renamed by the last override, so each microanneal
has its own runs (`<name>-0`, `<name>-1`, ...) under the checkpoint root, beside the checkpoint it
starts from.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import attrs

from olmo2spec.compiler import Checked, check
from olmo2spec.plan.plan import TrainStagePlan
from olmo2spec.spec.compose import ComposeCache
from olmo2spec.spec.diagnostics import Diagnostic, Severity, SpecError
from olmo2spec.spec.recipe import Recipe

__all__ = ["MicroannealChoice", "ChoiceOutcome", "recheck", "parse_candidates", "format_candidates",
           "microanneal_stage_of"]


def parse_candidates(text: str) -> list[list[str]]:
    """"demo-math, demo-code+demo-web" -> [["demo-math"], ["demo-code", "demo-web"]]: commas part candidates,
    `+` joins the sources of one. Names are not checked here: the compiler does (E050 names an unknown one)."""
    return [[s.strip() for s in part.split("+") if s.strip()] for part in text.split(",") if part.strip()]


def format_candidates(candidates: list[list[str]]) -> str:
    return ", ".join("+".join(c) for c in candidates)


def microanneal_stage_of(recipe: Recipe) -> str | None:
    """The name of the recipe's first microanneal stage (the one a choice varies); None without one."""
    return next((s.name for s in recipe.stages if s.kind == "microanneal"), None)


@attrs.frozen
class MicroannealChoice:
    """What the runner's boxes say, as the fields of the recipe's microanneal stage `stage`.

    `tokens` is written as in a recipe ("200K", or a whole number); `name` becomes the stage's name.
    `base` are overrides applied first (a smaller checkpoint interval, say), as given to the runner.
    """

    recipe: Path
    stage: str
    name: str
    start: str
    """The stage whose final checkpoint the microanneal starts from (its `from`)."""
    candidates: list[list[str]]
    general: str
    candidate_share: float
    tokens: str
    max_repeats: float
    base: tuple[str, ...] = ()

    def overrides(self) -> list[str]:
        """`--set` overrides, the rename last (a later override addresses the stage by its new name)."""
        prefix = f"stages.{self.stage}"
        tokens = self.tokens.strip()
        return [*self.base,
                f"{prefix}.from={json.dumps(self.start)}",
                f"{prefix}.candidates={json.dumps(self.candidates)}",
                f"{prefix}.general={json.dumps(self.general)}",
                f"{prefix}.candidate_share={self.candidate_share!r}",
                f"{prefix}.tokens={tokens if tokens.isdigit() else json.dumps(tokens)}",
                f"{prefix}.max_repeats={self.max_repeats!r}",
                f"{prefix}.name={json.dumps(self.name)}"]

    def command(self, verb: str = "explain") -> str:
        """The same check on the command line, to paste in a shell."""
        words = ["olmo2spec", verb, str(self.recipe)]
        for override in self.overrides():
            words += ["--set", override]
        return shlex.join(words)


@attrs.frozen
class ChoiceOutcome:
    """What the compiler says of a choice: the plan when it checks, and every diagnostic either way."""

    choice: MicroannealChoice
    checked: Checked | None
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return self.checked is not None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def stage(self) -> TrainStagePlan | None:
        """The microanneal's stage in the plan."""
        if self.checked is None:
            return None
        return next((s for s in self.checked.plan.stages if isinstance(s, TrainStagePlan)
                     and s.name == self.choice.name), None)

    def shown(self) -> list[Diagnostic]:
        """Every error, and the warnings about this microanneal (the recipe's own, e.g. W301 on its
        post-training stages, are the recipe's business, not this choice's)."""
        ours = (f"stages.{self.choice.name}", f"stages.{self.choice.stage}")
        return [d for d in self.diagnostics if d.severity is Severity.ERROR or d.field.startswith(ours)
                or (d.location is not None and d.location.file == "--set")]


def recheck(choice: MicroannealChoice, cache: ComposeCache | None = None) -> ChoiceOutcome:
    """Check the recipe with the choice's overrides, as `olmo2spec check --set ...` does."""
    try:
        checked = check(choice.recipe, choice.overrides(), cache=cache)
    except SpecError as exc:
        return ChoiceOutcome(choice, None, exc.diagnostics)
    return ChoiceOutcome(choice, checked, checked.warnings)
