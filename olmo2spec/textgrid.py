"""Plain-text tables for terminals and logs: the first column left-aligned, the others right-aligned."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_grid"]


def render_grid(header: Sequence[str], body: Sequence[Sequence[str]], footer: Sequence[Sequence[str]] = ()) -> str:
    """`header`, a rule of dashes, `body`, and (after another rule) `footer`, e.g. a total.

    Columns are two spaces apart, each as wide as its widest cell; lines carry no trailing spaces.
    """
    rows = [header, *body, *footer]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [cell.rjust(w) for cell, w in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(header), rule, *map(line, body)]
    if footer:
        lines += [rule, *map(line, footer)]
    return "\n".join(lines)
