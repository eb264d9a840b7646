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
    groups: list[MixRow]
    """Sums over sources that share a `group` (source_tokens, tokens and percentages add up)."""


def _row(source: str, source_tokens: int, tokens: int, budget: int) -> MixRow:
    return MixRow(source=source, source_tokens=source_tokens, tokens=tokens,
                  source_pct=100 * tokens / source_tokens if source_tokens else 0.0,
                  mix_pct=100 * tokens / budget if budget else 0.0,
                  repeats=tokens / source_tokens if source_tokens else 0.0)


def _groups(rows: list[MixRow], groups: dict[str, str], budget: int) -> list[MixRow]:
    out = []
    for group in sorted({groups[r.source] for r in rows if groups.get(r.source)}):
        members = [r for r in rows if groups.get(r.source) == group]
        out.append(_row(group, sum(r.source_tokens for r in members), sum(r.tokens for r in members), budget))
    return out


def _rows(taken: dict[str, int], sizes: dict[str, int]) -> tuple[int, list[MixRow]]:
    budget = sum(taken.values())
    return budget, [_row(name, sizes[name], tokens, budget) for name, tokens in taken.items()]


def mix_from_source_pct(name: str, description: str, source_pct: dict[str, float], sizes: dict[str, int],
                        groups: dict[str, str] | None = None) -> MixPlan:
    taken = {s: round(sizes[s] * pct / 100) for s, pct in source_pct.items()}
    budget, rows = _rows(taken, sizes)
    return MixPlan(name=name, description=description, tokens=budget, rows=rows,
                   groups=_groups(rows, groups or {}, budget))


def mix_from_mix_pct(name: str, description: str, mix_pct: dict[str, float], budget: int, sizes: dict[str, int],
                     groups: dict[str, str] | None = None) -> MixPlan:
    total_pct = sum(mix_pct.values())
    taken = {s: round(budget * pct / total_pct) for s, pct in mix_pct.items()}
    tokens, rows = _rows(taken, sizes)
    return MixPlan(name=name, description=description, tokens=tokens, rows=rows,
                   groups=_groups(rows, groups or {}, tokens))
