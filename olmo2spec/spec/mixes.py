"""`[sources.*]` and `[mixes.*]`: the token files a recipe reads and how it mixes them.

A mix is given the way Table 13 of the paper gives it: by source % (the share of each source
used; repeats written "2x" so they are never silent), or by mix % with a token budget. The
plan derives the other column and the budget.
"""

from __future__ import annotations

import attrs

from olmo2spec.spec.fields import doc, each, non_negative, one_of
from olmo2spec.spec.types import Share, Tokens

__all__ = ["SourceSpec", "MixSpec", "SOURCE_CATEGORIES"]

SOURCE_CATEGORIES = ("web", "code", "academic", "math", "encyclopedic", "instruction", "qa", "synthetic")


@attrs.frozen(kw_only=True)
class SourceSpec:
    """One data source: a set of token files and their size."""

    description: str = doc("Free text for people; never used in scripts.", default="")
    category: str = doc("Kind of text; 'code' sources get the code filters in `prepare`.", default="web",
                        validator=one_of(SOURCE_CATEGORIES))
    tokens: Tokens = doc("Tokens in the source (checked against the files when they exist).",
                         validator=non_negative)
    paths: list[str] = doc("Token files or globs, usually under ${DATA_ROOT}.", factory=list)
    raw: list[str] = doc("Raw JSONL (or .jsonl.gz) files or globs that a `prepare` stage tokenizes into "
                         "the directory of the first `paths` entry.", factory=list)
    group: str = doc("Sources of one group are also shown summed in mix tables (Table 13's 'Dolmino Math').",
                     default="")


def _percent(_inst: object, _attr: object, value: float) -> None:
    from olmo2spec.spec.fields import SpecValueError

    if not 0 <= value <= 100:
        raise SpecValueError(f"a mix % must be between 0 and 100 (got {value!r})")


@attrs.frozen(kw_only=True)
class MixSpec:
    """A named mix: source % per source (`source_pct`), or mix % plus a budget (`mix_pct`, `tokens`)."""

    description: str = doc("Free text for people; never used in scripts.", default="")
    source_pct: dict[str, Share] = doc(
        "Share of each source used, in percent (3.23), or declared repeats (\"2x\" = 200%).", factory=dict)
    mix_pct: dict[str, float] = doc("Share of the mix per source, in percent; needs `tokens`.",
                                    factory=dict, validator=each(_percent))
    tokens: Tokens | None = doc("Token budget of a mix given by `mix_pct`.", default=None,
                                validator=non_negative)
    allow_repeats: list[str] = doc("Sources a `mix_pct` mix may repeat (source % over 100).", factory=list)
