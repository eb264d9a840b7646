"""polars frames as HTML tables, for an `ipywidgets.HTML`: every cell escaped, numbers right-aligned."""

from __future__ import annotations

import html

import polars as pl

__all__ = ["html_table"]

_STYLE = ("border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);"
          "font-size:var(--jp-code-font-size,13px)")
_CELL = "padding:2px 10px;white-space:nowrap;border-bottom:1px solid var(--jp-border-color2,#ddd)"  # names unbroken


def _aligned(frame: pl.DataFrame, name: str) -> str:
    """Numbers, and text that reads as a number ("3.23", "1.2B", "2.00x"), right; words left."""
    if frame.schema[name].is_numeric():
        return "right"
    first = next((str(v) for v in frame[name] if v is not None and str(v)), "")
    return "right" if first[:1].isdigit() or first[:1] == "-" else "left"


def html_table(frame: pl.DataFrame, *, caption: str = "", italic_last: int = 0) -> str:
    """The frame as one `<table>`; its last `italic_last` rows in italics, like explain's subtotals."""
    align = {name: _aligned(frame, name) for name in frame.columns}
    head = "".join(f'<th style="{_CELL};text-align:{align[n]}">{html.escape(n)}</th>' for n in frame.columns)
    rows = []
    for i, row in enumerate(frame.iter_rows()):
        italic = ' style="font-style:italic"' if italic_last and i >= frame.height - italic_last else ""
        cells = "".join(f'<td style="{_CELL};text-align:{align[n]}">{html.escape(_text(v))}</td>'
                        for n, v in zip(frame.columns, row, strict=True))
        rows.append(f"<tr{italic}>{cells}</tr>")
    title = f'<caption style="text-align:left;font-weight:bold">{html.escape(caption)}</caption>' if caption else ""
    return f'<table style="{_STYLE}">{title}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _text(value: object) -> str:
    return "" if value is None else str(value)
