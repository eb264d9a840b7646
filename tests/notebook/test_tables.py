"""The shared HTML table: escaped cells, numbers right-aligned, subtotal rows in italics."""

import polars as pl

from olmo2spec.notebook.tables import html_table


def test_cells_are_escaped_and_aligned() -> None:
    frame = pl.DataFrame({"source": ["<b>web</b>", "math"], "tokens": ["1.2B", "3M"], "n": [1, 2]})
    text = html_table(frame, caption="Mix & more", italic_last=1)
    assert "&lt;b&gt;web&lt;/b&gt;" in text and "<b>web" not in text
    assert "Mix &amp; more" in text
    assert 'text-align:left">source' in text and 'text-align:right">tokens' in text
    assert text.count("font-style:italic") == 1
