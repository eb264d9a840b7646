"""plotly `FigureWidget` charts that update in place (through anywidget) instead of being redrawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["bar_chart", "set_bars", "grouped_bar_panels", "set_grouped_bars"]


def bar_chart(title: str, axis: str, *, height: int = 320, width: int = 560) -> go.FigureWidget:
    """An empty horizontal bar chart: one bar per label, filled by `set_bars`.

    A fixed width (plotly's own default is 700 px) so that it fits beside a table, or wraps under it.
    """
    figure = go.FigureWidget(data=[go.Bar(orientation="h", x=[], y=[])])
    figure.update_layout(title=title, xaxis_title=axis, height=height, width=width,
                         margin={"l": 10, "r": 10, "t": 40, "b": 40}, yaxis={"autorange": "reversed"},
                         template="plotly_white")
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


def grouped_bar_panels(titles: Sequence[str], *, height: int = 360) -> go.FigureWidget:
    """Empty panels side by side, each a grouped bar chart (one bar per series in each category)."""
    grid = make_subplots(rows=1, cols=len(titles), subplot_titles=list(titles), horizontal_spacing=0.08)
    figure = go.FigureWidget(grid)
    figure.update_layout(barmode="group", height=height, template="plotly_white",
                         margin={"l": 10, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.15})
    return figure


def set_grouped_bars(figure: go.FigureWidget, series: Mapping[str, Sequence[Mapping[str, float]]],
                     digits: int = 3) -> None:
    """Replace the bars: `series` maps a series' name (a legend entry) to one {category: value} per panel."""
    palette = plotly.colors.qualitative.Plotly  # one colour per series, the same in every panel
    figure.data = ()
    for i, (name, panels) in enumerate(series.items()):
        for col, values in enumerate(panels, start=1):
            figure.add_bar(x=list(values), y=list(values.values()), name=name, legendgroup=name,
                           showlegend=col == 1, marker_color=palette[i % len(palette)],
                           text=[f"{v:.{digits}g}" for v in values.values()], row=1, col=col)
