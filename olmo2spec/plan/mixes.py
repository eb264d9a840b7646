"""Mix tables: from source % (or mix % and a budget) to tokens, both percentages and repeats.

Table 13 of the paper defines the Dolmino mixes by source %; the token budget and mix % follow:
tokens(s) = source%(s) x size(s), budget = sum of tokens, mix%(s) = tokens(s) / budget.
"""

from __future__ import annotations

import attrs

__all__ = ["MixRow", "MixPlan", "mix_from_source_pct", "mix_from_mix_pct"]


@attrs.frozen(kw_only=True)
class MixRow:
    source: str
    source_tokens: int
    """Tokens in the whole source."""
    tokens: int
    """Tokens this mix takes from it."""
    source_pct: float
    """Share of the source used, percent; over 100 means repeats."""
    mix_pct: float
    """Share of the mix, percent."""
    repeats: float
    """Times the source is seen: source_pct / 100."""


@attrs.frozen(kw_only=True)
class MixPlan:
    name: str
    description: str
    tokens: int
    """Token budget: the sum of the rows."""
    rows: list[MixRow]


def _rows(taken: dict[str, int], sizes: dict[str, int]) -> tuple[int, list[MixRow]]:
    budget = sum(taken.values())
    rows = [
        MixRow(source=name, source_tokens=sizes[name], tokens=tokens,
               source_pct=100 * tokens / sizes[name] if sizes[name] else 0.0,
               mix_pct=100 * tokens / budget if budget else 0.0,
               repeats=tokens / sizes[name] if sizes[name] else 0.0)
        for name, tokens in taken.items()
    ]
    return budget, rows


def mix_from_source_pct(name: str, description: str, source_pct: dict[str, float],
                        sizes: dict[str, int]) -> MixPlan:
    taken = {s: round(sizes[s] * pct / 100) for s, pct in source_pct.items()}
    budget, rows = _rows(taken, sizes)
    return MixPlan(name=name, description=description, tokens=budget, rows=rows)


def mix_from_mix_pct(name: str, description: str, mix_pct: dict[str, float], budget: int,
                     sizes: dict[str, int]) -> MixPlan:
    total_pct = sum(mix_pct.values())
    taken = {s: round(budget * pct / total_pct) for s, pct in mix_pct.items()}
    tokens, rows = _rows(taken, sizes)
    return MixPlan(name=name, description=description, tokens=tokens, rows=rows)
