"""The mix explorer: a recipe's mix, a number box and a slider per source, and what the compiler says of each edit.

Every edit is re-checked in-process with `--set` overrides (`mix_edit.recheck`), so the table, the
chart, the stages and the diagnostics are those `olmo2spec explain` and `olmo2spec check` print for
the same overrides; the widget formats them with explain's own functions and derives nothing.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
import polars as pl

from olmo2spec.compiler import Checked, check
from olmo2spec.explain import MIX_COLUMNS, mix_cells, mix_title
from olmo2spec.notebook.charts import bar_chart, set_bars
from olmo2spec.notebook.mix_edit import MixEdit, Outcome, SourceShare, recheck, stages_of
from olmo2spec.notebook.tables import html_table
from olmo2spec.plan.mixes import MixPlan
from olmo2spec.plan.plan import Plan, TrainStagePlan
from olmo2spec.spec.compose import ComposeCache
from olmo2spec.spec.diagnostics import Diagnostic, Severity, SpecError, error_summary
from olmo2spec.spec.quantity import format_tokens
from olmo2spec.terminal import printable

__all__ = ["MixExplorer", "mix_frame", "stages_frame", "diagnostics_html"]

_FORMS = {
    "source_pct": "Declared by source % (the share of each source used; tick `repeats` to use one more than once, "
                  "written \"Nx\"). The budget and mix % follow.",
    "mix_pct": "Declared by mix % of a token budget (the shares must sum to 100; tick `repeats` to let a source "
               "repeat, the recipe's `allow_repeats`).",
}


def mix_frame(mix: MixPlan) -> pl.DataFrame:
    """explain's mix table as a frame of its cells: the sources, then the group subtotals."""
    rows = [mix_cells(row) for row in [*mix.rows, *mix.groups]]
    return pl.DataFrame(rows, schema=list(MIX_COLUMNS), orient="row")


def stages_frame(plan: Plan, mix: str) -> pl.DataFrame:
    """The stages that read the mix: steps and tokens per run (as explain's stages table), and epochs of it."""
    rows = [(s.name, s.kind, str(len(s.runs)), f"{s.steps:,}", format_tokens(s.tokens), f"{s.mix_epochs:.3f}")
            for s in stages_of(plan, mix)]
    return pl.DataFrame(rows, schema=["stage", "kind", "runs", "steps", "tokens/run", "mix epochs"], orient="row")


def diagnostics_html(diagnostics: list[Diagnostic]) -> str:
    """The diagnostics as `olmo2spec check` prints them, errors red and warnings amber; "ok" without errors."""
    ok = '<span style="color:#2a7a2a">ok: the recipe checks with this mix</span>'
    if not diagnostics:
        return ok
    colour = {Severity.ERROR: "#b00020", Severity.WARNING: "#a05a00"}
    lines = [f'<span style="color:{colour.get(d.severity, "inherit")}">'
             f'{html.escape(printable(d.render(), newlines=True))}</span>' for d in diagnostics]
    summary = error_summary(diagnostics)
    if summary:
        lines.append(html.escape(summary))
    else:  # warnings only (a stage that is not yet runnable, say): the recipe still checks, as `check` says
        lines.insert(0, ok)
    return f'<pre style="margin:0;white-space:pre-wrap">{chr(10).join(lines)}</pre>'


class _SourceRow:
    """One source: its share in a number box and a slider that move together, and the repeats switch beside them.

    The box is the value (what the edit reads); the slider is a way to set it. Only the box is
    observed, and the slider reports at the end of a drag (`continuous_update=False`), so one drag
    is one re-plan. A box value outside the slider's range widens the range (a repeated source's
    300%) or, below zero (an error the compiler reports), leaves the slider at its end.
    """

    def __init__(self, source: str, share: SourceShare, on_change: Callable[[], None]) -> None:
        self.source = source
        self.box = widgets.FloatText(value=share.percent, description=source, step=1.0,
                                     style={"description_width": "260px"}, layout={"width": "400px"})
        self.slider = widgets.FloatSlider(value=0.0, min=0.0, max=_slider_max(share.percent), step=0.5,
                                          continuous_update=False, readout=False, layout={"width": "260px"})
        self.repeats = widgets.Checkbox(value=share.repeats, description="repeats", indent=False,
                                        layout={"width": "90px"})
        for widget, name in ((self.box, "share"), (self.slider, "slider"), (self.repeats, "repeats")):
            widget.add_class(f"olmo2spec-mix-{name}")  # stable handles for a browser test
        self.widget = widgets.HBox([self.box, self.slider, self.repeats])
        self.widget.add_class("olmo2spec-mix-row")
        self._syncing = False
        self._follow_box()
        self.slider.observe(lambda _change: self._follow_slider(), names="value")
        self.box.observe(lambda _change: self._follow_box(), names="value")
        for w in (self.box, self.repeats):
            w.observe(lambda _change: on_change(), names="value")

    @property
    def share(self) -> SourceShare:
        return SourceShare(float(self.box.value), bool(self.repeats.value))

    def _follow_box(self) -> None:
        if self._syncing:
            return
        self._syncing = True  # the slider's own observer must not write a clamped value back to the box
        try:
            value = float(self.box.value)
            if value > self.slider.max:
                self.slider.max = _slider_max(value)
            self.slider.value = min(max(value, self.slider.min), self.slider.max)
        finally:
            self._syncing = False

    def _follow_slider(self) -> None:
        if not self._syncing:
            self.box.value = float(self.slider.value)


def _slider_max(percent: float) -> float:
    """100%, or the next hundred above a larger share (a source used more than once)."""
    return max(100.0, 100.0 * -(-percent // 100.0))


class MixExplorer(widgets.VBox):  # type: ignore[misc]  # ipywidgets ships no types
    """Pick a recipe and a mix, edit its shares, see the compiler's table, chart, stages and diagnostics.

    Args:
        recipe: the recipe shown first; the picker lists every `*.toml` beside it.
        mix: the mix shown first (default: the first anneal stage's mix, else the recipe's first mix).
    """

    def __init__(self, recipe: str | os.PathLike[str] = "specs/13b.toml", mix: str | None = None) -> None:
        recipe = Path(recipe)
        self.recipe_picker = widgets.Dropdown(description="recipe", options=_recipes_beside(recipe),
                                              value=recipe, style={"description_width": "60px"})
        self.mix_picker = widgets.Dropdown(description="mix", options=[], style={"description_width": "60px"})
        self.form = widgets.HTML()
        self.sources = widgets.VBox()
        self.budget = widgets.Text(description="tokens", continuous_update=False,
                                   style={"description_width": "260px"}, layout={"width": "400px"})
        self.command = widgets.HTML()
        self.diagnostics = widgets.HTML()
        self.table = widgets.HTML()
        self.stages = widgets.HTML()
        self.chart = bar_chart("mix %", "share of the mix, %")
        self.save_path = widgets.Text(description="save as", style={"description_width": "60px"},
                                      layout={"width": "480px"})
        self.save_button = widgets.Button(description="Save", icon="save")
        self.save_status = widgets.HTML()
        self.rows: dict[str, _SourceRow] = {}
        self.edit: MixEdit | None = None
        self.outcome: Outcome | None = None
        self.checked: Checked | None = None
        """The recipe as written."""
        self.shown: pl.DataFrame | None = None
        """The table on screen: the last edit that checked."""
        self._groups = 0
        self._loading = False
        for widget, name in ((self.table, "table"), (self.diagnostics, "diagnostics"), (self.stages, "stages"),
                             (self.budget, "budget"), (self.save_button, "save")):
            widget.add_class(f"olmo2spec-mix-{name}")  # stable handles for a browser test
        self._cache = ComposeCache()  # the recipe's files, composed once; each edit only adds overrides
        super().__init__([
            widgets.HBox([self.recipe_picker, self.mix_picker]), self.form, self.sources, self.diagnostics,
            self.command,
            widgets.HBox([self.table, self.chart], layout={"flex_flow": "row wrap"}),  # the chart under, if narrow
            self.stages,
            widgets.HBox([self.save_path, self.save_button]), self.save_status,
        ])
        self.recipe_picker.observe(lambda _c: self._load_recipe(None), names="value")
        self.mix_picker.observe(lambda _c: self._load_mix(), names="value")
        self.budget.observe(lambda _c: self._edited(), names="value")
        self.save_button.on_click(lambda _b: self.save())
        self._load_recipe(mix)

    # -- what the user picks --------------------------------------------------------------
    def _load_recipe(self, mix: str | None) -> None:
        recipe = Path(self.recipe_picker.value)
        try:
            checked = check(recipe, cache=self._cache)
        except SpecError as exc:  # the recipe as written does not check: say so, edit nothing
            self._loading = True
            self.mix_picker.options = []
            self._loading = False
            self.checked, self.edit, self.outcome, self.rows = None, None, None, {}
            self.sources.children = []
            self.diagnostics.value = diagnostics_html(exc.diagnostics)
            return
        self.checked = checked
        names = list(checked.recipe.mixes)
        self._loading = True
        self.mix_picker.options = names
        self.mix_picker.value = mix if mix in names else _first_anneal_mix(checked.plan, names)
        self._loading = False
        self._load_mix()

    def _load_mix(self) -> None:
        if self._loading or self.mix_picker.value is None or self.checked is None:
            return
        name = self.mix_picker.value
        edit = MixEdit.of(self.recipe_picker.value, name, self.checked.recipe.mixes[name])
        self._loading = True
        self.rows = {s: _SourceRow(s, share, self._edited) for s, share in edit.shares.items()}
        self.sources.children = [r.widget for r in self.rows.values()] + ([self.budget] if edit.form == "mix_pct"
                                                                          else [])
        self.budget.value = edit.tokens
        self.form.value = html.escape(_FORMS[edit.form])
        self.save_path.value = f"{Path(edit.recipe).stem}-{name}.toml"
        self.save_status.value = ""
        self._loading = False
        self.edit = edit
        self.shown = None
        self._edited()

    # -- every edit -----------------------------------------------------------------------
    def _edited(self) -> None:
        if self._loading or self.edit is None:
            return
        edit = self.edit
        for source, row in self.rows.items():
            edit = edit.with_share(source, row.share)
        if edit.form == "mix_pct":
            edit = edit.with_tokens(self.budget.value)
        self.edit = edit
        self.show(recheck(edit, self._cache))

    def show(self, outcome: Outcome) -> None:
        """Draw what the compiler said: always the diagnostics; the table only from a plan that checked."""
        self.outcome = outcome
        self.diagnostics.value = diagnostics_html(outcome.diagnostics)
        self.command.value = f"<code>{html.escape(outcome.edit.command())}</code>"
        mix = outcome.mix
        if outcome.checked is None or mix is None:
            if self.shown is not None:
                self.table.value = html_table(self.shown, caption="not updated: the edit has errors (above); "
                                              "this is the last edit that checked", italic_last=self._groups)
            return
        self.shown, self._groups = mix_frame(mix), len(mix.groups)
        self.table.value = html_table(self.shown, caption=mix_title(mix), italic_last=self._groups)
        set_bars(self.chart, [r.source for r in mix.rows], [r.mix_pct for r in mix.rows],
                 title=f"{mix_title(mix)}: mix %")
        self.stages.value = html_table(stages_frame(outcome.checked.plan, mix.name),
                                       caption=f"Stages that read {mix.name}")

    # -- saving ---------------------------------------------------------------------------
    def save(self, where: str | os.PathLike[str] | None = None) -> Path | None:
        """Write the edited mix as a recipe `olmo2spec check` accepts; refused while the edit has errors."""
        if self.edit is None or self.outcome is None or not self.outcome.ok:
            self.save_status.value = "not saved: the edit has errors (above)"
            return None
        path = Path(where if where is not None else self.save_path.value)
        try:
            self.edit.save(path)
        except OSError as exc:
            self.save_status.value = html.escape(f"not saved: {exc}")
            return None
        self.save_status.value = html.escape(f"saved {path}: `olmo2spec explain {path}` shows this table")
        return path


def _first_anneal_mix(plan: Plan, names: list[str]) -> str | None:
    """The mix the first anneal stage reads (the mid-training mix one edits), else the recipe's first."""
    annealed = [r.mix for s in plan.stages if isinstance(s, TrainStagePlan) and s.kind == "anneal" for r in s.runs]
    return next((m for m in annealed if m in names), names[0] if names else None)


def _recipes_beside(recipe: Path) -> list[tuple[str, Path]]:
    found = sorted(recipe.parent.glob("*.toml"))
    if recipe not in found:
        found.insert(0, recipe)
    return [(p.name, p) for p in found]
