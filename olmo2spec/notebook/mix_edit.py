"""A mix being edited: its values as `--set` overrides, re-checked by the compiler, saved as TOML.

No widgets here (the explorer in `mixes` draws them) and no arithmetic: every number shown comes
from `olmo2spec.compiler.check` with the same overrides `olmo2spec check --set` would apply.
"""

from __future__ import annotations

import decimal
import json
import os
import shlex
from pathlib import Path
from typing import Literal

import attrs

from olmo2spec.atomic import write_atomic
from olmo2spec.compiler import Checked, check
from olmo2spec.plan.mixes import MixPlan
from olmo2spec.plan.plan import Plan, TrainStagePlan
from olmo2spec.spec.compose import ComposeCache
from olmo2spec.spec.diagnostics import Diagnostic, Severity, SpecError
from olmo2spec.spec.mixes import MixSpec

__all__ = ["SourceShare", "MixEdit", "Outcome", "recheck", "stages_of"]

Form = Literal["source_pct", "mix_pct"]


def _plain(number: float) -> str:
    """A number as TOML reads it and as "Nx" allows it: positional, never 1e-05; shortest exact form."""
    return format(decimal.Decimal(repr(float(number))), "f")


@attrs.frozen
class SourceShare:
    """One source's row: its source % (or mix %), and whether it may repeat.

    `repeats` is the recipe's own switch: for a source % mix, the share is written "Nx" (declared
    repeats); for a mix % mix, the source is listed in `allow_repeats`.
    """

    percent: float
    repeats: bool


@attrs.frozen
class MixEdit:
    """A recipe's mix with edited shares (and budget); `original` is the mix as the recipe writes it."""

    recipe: Path
    mix: str
    form: Form
    description: str
    shares: dict[str, SourceShare]
    original: dict[str, SourceShare]
    tokens: str = ""
    """The budget of a mix % mix as written ("50B", or a whole number); "" for a source % mix."""
    original_tokens: str = ""

    @classmethod
    def of(cls, recipe: str | os.PathLike[str], mix: str, spec: MixSpec) -> MixEdit:
        """The mix as the recipe declares it, unedited."""
        if spec.source_pct:
            shares = {s: SourceShare(v.percent, v.repeats_declared) for s, v in spec.source_pct.items()}
            return cls(Path(recipe), mix, "source_pct", spec.description, shares, dict(shares))
        shares = {s: SourceShare(pct, s in spec.allow_repeats) for s, pct in spec.mix_pct.items()}
        tokens = "" if spec.tokens is None else str(spec.tokens)
        return cls(Path(recipe), mix, "mix_pct", spec.description, shares, dict(shares), tokens, tokens)

    def with_share(self, source: str, share: SourceShare) -> MixEdit:
        return attrs.evolve(self, shares={**self.shares, source: share})

    def with_tokens(self, tokens: str) -> MixEdit:
        return attrs.evolve(self, tokens=tokens.strip())

    # -- as the compiler reads it -----------------------------------------------------------
    def _value(self, share: SourceShare) -> str:
        if self.form == "source_pct" and share.repeats:
            return f'"{_plain(share.percent / 100)}x"'
        return _plain(share.percent)

    def _tokens_value(self) -> str:
        return self.tokens if self.tokens.isdigit() else json.dumps(self.tokens)

    def _allowed(self) -> str:
        return json.dumps([s for s, share in self.shares.items() if share.repeats])

    def overrides(self) -> list[str]:
        """`--set` overrides for what differs from the recipe, in the mix's source order."""
        prefix = f"mixes.{self.mix}"
        out = [f"{prefix}.{self.form}.{s}={self._value(share)}" for s, share in self.shares.items()
               if share != self.original[s]]
        if self.form == "mix_pct":
            if any(share.repeats != self.original[s].repeats for s, share in self.shares.items()):
                out.append(f"{prefix}.allow_repeats={self._allowed()}")
            if self.tokens != self.original_tokens:
                out.append(f"{prefix}.tokens={self._tokens_value()}")
        return out

    def command(self, verb: str = "explain") -> str:
        """The same check on the command line, to paste in a shell."""
        words = ["olmo2spec", verb, str(self.recipe)]
        for override in self.overrides():
            words += ["--set", override]
        return shlex.join(words)

    # -- saved ------------------------------------------------------------------------------
    def fragment(self, where: str | os.PathLike[str]) -> str:
        """A recipe file to write at `where`: the edited recipe, as `extends` of it plus this mix."""
        base = os.path.relpath(self.recipe.absolute(), Path(where).absolute().parent)
        key = json.dumps(self.mix)
        table = ", ".join(f"{json.dumps(s)} = {self._value(share)}" for s, share in self.shares.items())
        lines = [f"# Mix {self.mix} as edited in the mix explorer: `olmo2spec explain` this file shows its table.",
                 f"extends = {json.dumps(Path(base).as_posix())}", "", f"[mixes.{key}]",
                 f"description = {json.dumps(self.description)}", f"{self.form} = {{ {table} }}"]
        if self.form == "mix_pct":
            lines += [f"tokens = {self._tokens_value()}", f"allow_repeats = {self._allowed()}"]
        return "\n".join(lines) + "\n"

    def save(self, where: str | os.PathLike[str]) -> Path:
        """Write `fragment(where)` whole (never half a file)."""
        write_atomic(where, self.fragment(where))
        return Path(where)


@attrs.frozen
class Outcome:
    """What the compiler says about an edit: the plan when it checks, and every diagnostic either way."""

    edit: MixEdit
    checked: Checked | None
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return self.checked is not None

    @property
    def mix(self) -> MixPlan | None:
        return self.checked.plan.mixes.get(self.edit.mix) if self.checked else None

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]


def recheck(edit: MixEdit, cache: ComposeCache | None = None) -> Outcome:
    """Check the recipe with the edit's overrides, as `olmo2spec check --set ...` does.

    `cache` keeps the recipe's files composed between edits (most of a check's time); the result is
    the same as without it.
    """
    try:
        checked = check(edit.recipe, edit.overrides(), cache=cache)
    except SpecError as exc:
        return Outcome(edit, None, exc.diagnostics)
    return Outcome(edit, checked, checked.warnings)


def stages_of(plan: Plan, mix: str) -> list[TrainStagePlan]:
    """The training stages that read the mix."""
    return [s for s in plan.stages if isinstance(s, TrainStagePlan) and any(r.mix == mix for r in s.runs)]

