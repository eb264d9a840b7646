"""The notebook frontend: ipywidgets classes that the thin notebooks in `notebooks/` show.

Every number a widget shows comes from the compiler (`olmo2spec.compiler.check`) or the runtime;
nothing is computed in a notebook cell. The stack, shared by every widget: ipywidgets 8, polars
tables rendered as HTML (`tables`), plotly `FigureWidget` charts that update in place (`charts`).
These come with the `notebook` extra (`pip install 'olmo2spec[notebook]'`); the compiler never
imports this package.
"""
