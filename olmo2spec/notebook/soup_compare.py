"""Ingredients and their soup side by side (the paper's Tables 9 and 14): rows = models, columns = metrics.

The models come from the soup's COMPLETE marker (its ingredients' checkpoints and weights), so a soup made
in an earlier session is compared the same way. Each is evaluated by the eval stage's `evaluate_checkpoint`,
once: `cached_evaluation` keeps the result beside its checkpoints (demo-results.json, the cache
`olmo2spec demo-report` reads and writes too), so reopening the notebook evaluates nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from olmo2spec.notebook.soup_ingredients import plan_for
from olmo2spec.plan.plan import Plan
from olmo2spec.runtime.checkpoint import CheckpointError, read_marker

__all__ = ["Compared", "soup_models", "evaluate_models", "comparison_frame", "chart_series", "LOSS", "MATH"]

LOSS = "demo-heldout-loss"
MATH = {"math dev %": "demo-math-dev", "math held-out %": "demo-math-heldout"}
"""Column -> the eval task it shows (dev may guide decisions, held-out is reported only: paper section 2.5)."""


@attrs.frozen(kw_only=True)
class Compared:
    label: str
    role: str
    """"ingredient" or "soup"."""
    weight: float | None
    """Its weight in the soup (ingredients)."""
    step: Path


def soup_models(soup_step: Path) -> list[Compared]:
    """The soup's ingredients (as its marker records them), then the soup.

    Raises:
        CheckpointError: the soup's marker cannot be read.
    """
    marker = read_marker(soup_step)
    models = [Compared(label=str(i["run"]), role="ingredient", weight=float(w), step=Path(i["checkpoint"]))
              for i, w in zip(marker.get("ingredients", []), marker.get("weights", []), strict=True)]
    return [*models, Compared(label=str(marker.get("run", soup_step.parent.name)), role="soup", weight=None,
                              step=soup_step)]


def evaluate_models(models: list[Compared], data_root: Path, *, limit: int | None = None,
                    fallback: Plan | None = None,
                    say: Callable[[int, str], None] = lambda _i, _text: None) -> list[dict[str, Any]]:
    """One row per model: the model and the eval stage's results (cached per checkpoint).

    `say(i, text)` is told before model i is evaluated (or read from its cache).

    Raises:
        CheckpointError, EvalError: a checkpoint or eval file that is missing or damaged.
    """
    from olmo2spec.runtime.demo_report import cached_evaluation

    rows = []
    for i, model in enumerate(models):
        say(i, f"evaluating {model.label} ({i + 1} of {len(models)})")
        plan = plan_for(model.step, fallback)
        if plan is None:
            raise CheckpointError(f"checkpoint {model.step} carries no plan.json and no bundle was given: set "
                                  "OLMO2SPEC_BUNDLE to the bundle that trained it")
        rows.append({"model": model, **cached_evaluation(plan, model.step, data_root, limit)})
    return rows


def _sources(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({s for r in rows for s in r.get(LOSS, {})})


def comparison_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """model, role, weight %, held-out loss per source (nats/token), math accuracy % (dev, held-out)."""
    sources = _sources(rows)
    data: dict[str, list[Any]] = {"model": [], "role": [], "weight %": []}
    data.update({f"loss {s}": [] for s in sources})
    data.update({column: [] for column in MATH})
    for row in rows:
        model: Compared = row["model"]
        data["model"].append(model.label)
        data["role"].append(model.role)
        data["weight %"].append(None if model.weight is None else round(100 * model.weight, 1))
        for s in sources:
            loss = row.get(LOSS, {}).get(s)
            data[f"loss {s}"].append(None if loss is None else round(float(loss), 4))
        for column, task in MATH.items():
            data[column].append(round(100 * float(row[task]["accuracy"]), 1) if task in row else None)
    return pl.DataFrame(data, schema={name: pl.Utf8 if name in ("model", "role") else pl.Float64 for name in data})


def chart_series(frame: pl.DataFrame) -> dict[str, list[dict[str, float]]]:
    """model -> [{source: held-out loss}, {split: math accuracy %}], the two panels of the chart."""
    losses = [c for c in frame.columns if c.startswith("loss ")]
    series = {}
    for row in frame.iter_rows(named=True):
        series[row["model"]] = [{c.removeprefix("loss "): row[c] for c in losses if row[c] is not None},
                                {c.removesuffix(" %").removeprefix("math "): row[c] for c in MATH
                                 if row[c] is not None}]
    return series
