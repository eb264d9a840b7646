"""plotly `FigureWidget` charts that update in place (through anywidget) instead of being redrawn."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

__all__ = ["bar_chart", "set_bars"]


def bar_chart(title: str, axis: str, *, height: int = 320) -> go.FigureWidget:
    """An empty horizontal bar chart: one bar per label, filled by `set_bars`."""
    figure = go.FigureWidget(data=[go.Bar(orientation="h", x=[], y=[])])
    figure.update_layout(title=title, xaxis_title=axis, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 40},
                         yaxis={"autorange": "reversed"}, template="plotly_white")
    return figure


def set_bars(figure: go.FigureWidget, labels: Sequence[str], values: Sequence[float], *,
             title: str | None = None) -> None:
    """Replace the bars in one update (one message to the browser, one redraw)."""
    with figure.batch_update():
        bars = figure.data[0]
        bars.y = list(labels)
        bars.x = list(values)
        bars.text = [f"{v:.2f}" for v in values]
        if title is not None:
            figure.layout.title.text = title
