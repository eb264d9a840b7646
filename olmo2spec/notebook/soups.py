"""The soup comparer: tick finished anneal runs, weigh them, soup them, and see the soup beside its ingredients.

Each piece is the runtime's own: the runs are found as the soup stage finds its ingredients' final steps
(`soup_ingredients`), the weights normalised by the compiler's rule and the soup made by the soup stage's
functions (`soup_make`), every model evaluated by the eval stage's `evaluate_checkpoint`, cached per
checkpoint (`soup_compare`). Souping and evaluating run in a thread, with a progress bar, so the kernel
stays free; a refusal (weights, ingredients of other models, a name taken) is shown in place.
"""

from __future__ import annotations

import html
import os
import threading
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from olmo2spec.notebook.charts import grouped_bar_panels, set_grouped_bars
from olmo2spec.notebook.soup_compare import chart_series, comparison_frame, evaluate_models, soup_models
from olmo2spec.notebook.soup_ingredients import Ingredient, find_ingredients
from olmo2spec.notebook.soup_make import SOUPS, MadeSoup, SoupRefused, earlier_soups, make_soup, weights_for
from olmo2spec.notebook.tables import html_table
from olmo2spec.plan.plan import Plan, from_json
from olmo2spec.runtime.checkpoint import CheckpointError, step_dir

__all__ = ["SoupComparer"]

_REPO = Path(__file__).resolve().parents[2]


def _default_path(env: str, fallback: str) -> Path:
    return Path(os.environ.get(env) or _REPO / fallback)


def _error(text: str) -> str:
    return f'<pre style="color:var(--jp-error-color1,#c62828);white-space:pre-wrap">{html.escape(text)}</pre>'


class _IngredientRow(widgets.HBox):  # type: ignore[misc]  # ipywidgets ships no types
    """A run's checkbox, its weight, and the share of the soup that weight comes to."""

    def __init__(self, ingredient: Ingredient) -> None:
        self.ingredient = ingredient
        self.use = widgets.Checkbox(value=True, description=ingredient.run, indent=False,
                                    layout=widgets.Layout(width="260px"))
        self.weight = widgets.BoundedFloatText(value=1.0, min=0.0, max=1e12, step=0.1, description="weight",
                                               layout=widgets.Layout(width="180px"))
        self.share = widgets.HTML(layout=widgets.Layout(width="90px"))
        info = widgets.HTML(f"<small>{html.escape(ingredient.stage)}, step {ingredient.step:,}</small>")
        super().__init__([self.use, self.weight, self.share, info])


class SoupComparer(widgets.VBox):  # type: ignore[misc]
    """Pick ingredients and weights, soup them, compare the soup with its ingredients (table and chart).

    Args:
        checkpoint_root: where the runs are, and where soups go (`notebook-soups/<name>/`); default
            $CHECKPOINT_ROOT, else the demo's .demo/checkpoints.
        data_root: the demo corpus (its eval/ files); default $DATA_ROOT, else .demo/data.
        bundle: the plan of steps that carry none; default $OLMO2SPEC_BUNDLE, else generated/tiny.
        limit: evaluate only the first `limit` math items of each split (None: all, as `olmo2spec demo-report`).
    """

    def __init__(self, checkpoint_root: Path | None = None, data_root: Path | None = None,
                 bundle: Path | None = None, *, limit: int | None = None) -> None:
        super().__init__()
        self.checkpoint_root = Path(checkpoint_root or _default_path("CHECKPOINT_ROOT", ".demo/checkpoints"))
        self.data_root = Path(data_root or _default_path("DATA_ROOT", ".demo/data"))
        bundle = Path(bundle or _default_path("OLMO2SPEC_BUNDLE", "generated/tiny"))
        plan_file = bundle / "plan.json"
        self.plan: Plan | None = from_json(plan_file.read_text(encoding="utf-8")) if plan_file.is_file() else None
        self.limit = limit
        listing = find_ingredients(self.checkpoint_root, self.plan)
        self.rows = [_IngredientRow(i) for i in listing.ingredients]
        for row in self.rows:
            row.use.observe(lambda _c: self._update_shares(), names="value")
            row.weight.observe(lambda _c: self._update_shares(), names="value")
        self.name = widgets.Text(description="name", placeholder="automatic: soup-<digest of the choice>",
                                 layout=widgets.Layout(width="420px"))
        self.button = widgets.Button(description="Soup", button_style="primary", icon="flask",
                                     disabled=not self.rows)
        self.button.on_click(lambda _b: self.start())
        self.earlier = widgets.Dropdown(description="earlier", options=self._earlier_options(), value=None)
        self.earlier.observe(self._on_earlier, names="value")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="420px"))
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.chart = grouped_bar_panels(["held-out loss (nats/token, lower is better)",
                                         "math accuracy (%, higher is better)"])
        self.made: MadeSoup | None = None
        self.frame: Any = None
        self._worker: threading.Thread | None = None

        header = widgets.HTML(f"Anneal runs under <code>{html.escape(str(self.checkpoint_root))}</code>; soups go "
                              f"to <code>{html.escape(str(self.checkpoint_root / SOUPS))}/&lt;name&gt;/</code>.")
        if not self.rows:
            header = widgets.HTML(f"no anneal runs under {html.escape(str(self.checkpoint_root))} (finished runs of "
                                  "anneal stages): run `just demo`, or set CHECKPOINT_ROOT")
        notes = widgets.HTML("".join(f"<div><small>left out: {html.escape(line)}</small></div>"
                                     for line in listing.unfinished))
        self.children = (header, *self.rows, notes, widgets.HBox([self.name, self.button]), self.earlier,
                         self.progress, self.status, self.table, self.chart)
        self._update_shares()

    # -- the choice ----------------------------------------------------------------------------
    def chosen(self) -> tuple[list[Ingredient], list[float]]:
        """The ticked runs and their weights as typed."""
        rows = [r for r in self.rows if r.use.value]
        return [r.ingredient for r in rows], [float(r.weight.value) for r in rows]

    def _update_shares(self) -> None:
        """Each ticked run's share of the soup, or why the weights cannot be used (the checker's E036)."""
        ingredients, raw = self.chosen()
        for row in self.rows:
            row.share.value = ""
        if not self.rows:
            return
        try:
            weights = weights_for(raw, [i.run for i in ingredients])
        except SoupRefused as exc:
            self.status.value = _error(str(exc))
            return
        ticked = [r for r in self.rows if r.use.value]
        for row, weight in zip(ticked, weights, strict=True):
            row.share.value = f"<b>{100 * weight:.1f}%</b>"
        self.status.value = ""

    def _earlier_options(self) -> list[tuple[str, str | None]]:
        soups = earlier_soups(self.checkpoint_root)
        return [("(a soup made before)" if soups else "(none made yet)", None),
                *[(f"{name}: {', '.join(i['run'] for i in marker.get('ingredients', []))}", name)
                  for name, marker in soups.items()]]

    # -- the work ------------------------------------------------------------------------------
    def soup(self) -> MadeSoup | None:
        """Soup the chosen runs, export the soup, and compare it with its ingredients; None when refused."""
        ingredients, raw = self.chosen()
        self.progress.max, self.progress.value = len(ingredients) + 3, 0
        try:
            made = make_soup(self.checkpoint_root, ingredients, raw, name=self.name.value, fallback=self.plan,
                             say=self._step)
        except SoupRefused as exc:
            self._refused(str(exc))
            return None
        self.made = made
        self.progress.value = 2
        note = f" ({made.note})" if made.note else ""
        if not self.compare(made.name):
            return None
        self.earlier.options = self._earlier_options()  # the new soup joins the list (the value goes back to None)
        where = f"{made.step}" + (f", Hugging Face export in {made.hf}" if made.hf else "")
        self.status.value = (f"soup <b>{html.escape(made.name)}</b> {'found (made before)' if made.reused else 'made'}:"
                             f" {html.escape(where)}{html.escape(note)}")
        return made

    def compare(self, name: str) -> bool:
        """Evaluate (or read from cache) the soup `name` and its ingredients, and show them; False when refused."""
        from olmo2spec.runtime.evaluate import EvalError

        step = step_dir(self.checkpoint_root / SOUPS / name, 0)
        try:
            models = soup_models(step)
            self.progress.max = max(self.progress.max, len(models) + 2)
            base = self.progress.max - len(models)
            rows = evaluate_models(models, self.data_root, limit=self.limit, fallback=self.plan,
                                   say=lambda i, text: self._step(text, base + i))
        except (CheckpointError, EvalError) as exc:
            self._refused(str(exc))
            return False
        self.frame = comparison_frame(rows)
        self.table.value = html_table(self.frame, caption=f"{name} and its ingredients (Tables 9 and 14 shape); "
                                      f"math on {'all' if self.limit is None else f'the first {self.limit}'} items")
        set_grouped_bars(self.chart, chart_series(self.frame))
        self.progress.value = self.progress.max
        self.status.value = f"soup <b>{html.escape(name)}</b> compared with its {len(models) - 1} ingredients"
        return True

    def _step(self, text: str, value: int | None = None) -> None:
        self.progress.value = min(self.progress.max, self.progress.value + 1 if value is None else value)
        self.status.value = html.escape(text) + " …"

    def _refused(self, text: str) -> None:
        self.progress.value = 0
        self.status.value = _error(text)

    def _on_earlier(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.start(change["new"])

    # -- in the background -----------------------------------------------------------------------
    def start(self, earlier: str | None = None) -> threading.Thread | None:
        """Soup (or, given `earlier`, compare a soup made before) in a thread; None while one is running."""
        if self._worker is not None and self._worker.is_alive():
            return None
        self._worker = threading.Thread(target=self._work, args=(earlier,), name="soup-comparer", daemon=True)
        self._worker.start()
        return self._worker

    def wait(self) -> None:
        if self._worker is not None:
            self._worker.join()

    def _work(self, earlier: str | None) -> None:
        self.button.disabled = True
        try:
            if earlier:
                self.progress.max, self.progress.value = 1, 0
                self.compare(earlier)
            else:
                self.soup()
        except Exception as exc:  # shown in place: a thread's traceback would go nowhere
            self._refused(f"{type(exc).__name__}: {exc}")
        finally:
            self.button.disabled = not self.rows
