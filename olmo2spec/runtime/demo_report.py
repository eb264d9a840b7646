"""The demo's closing table, in the spirit of the paper's Tables 9 and 14: the pretrained model,
each microanneal candidate (section 4.4.2), each mid-training ingredient and the soup, on
held-out loss per source and math accuracy with the development and held-out splits apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olmo2spec.atomic import write_json_atomic
from olmo2spec.plan.plan import Plan, SoupStagePlan, TrainStagePlan
from olmo2spec.runtime.checkpoint import latest_complete
from olmo2spec.textgrid import render_grid

__all__ = ["CACHE", "cached_evaluation", "demo_rows", "labelled_runs", "table_cells", "render_kinds", "render_table",
           "verdicts"]

CACHE = "demo-results.json"
"""A run directory's cached evaluation of its newest checkpoint."""


def labelled_runs(plan: Plan) -> list[tuple[str, str]]:
    """(label, run) for the pretrained model, every anneal ingredient and every soup, in DAG order."""
    rows: list[tuple[str, str]] = []
    for stage in plan.stages:
        if isinstance(stage, TrainStagePlan) and stage.kind == "pretrain":
            rows += [("pretrained", run.name) for run in stage.runs]
        elif isinstance(stage, TrainStagePlan) and stage.kind == "anneal":
            rows += [(f"ingredient (seed {run.seed})", run.name) for run in stage.runs]
        elif isinstance(stage, TrainStagePlan) and stage.kind == "microanneal":  # section 4.4.2
            candidates = [plan.mixes[run.mix].description.removeprefix("microanneal candidate ") for run in stage.runs]
            rows += [(f"microanneal: {c}", run.name) for c, run in zip(candidates, stage.runs, strict=True)]
        elif isinstance(stage, SoupStagePlan):
            rows.append((f"soup of {len(stage.ingredients)}", stage.name))
    return rows


def demo_rows(plan: Plan, checkpoint_root: Path, data_root: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Evaluate each model once (results cached beside its checkpoints as demo-results.json)."""
    rows = []
    for label, run in labelled_runs(plan):
        path = latest_complete(checkpoint_root / run)
        if path is None:
            continue
        rows.append({"label": label, "run": run, **cached_evaluation(plan, path, data_root, limit)})
    return rows


def cached_evaluation(plan: Plan | None, path: Path, data_root: Path, limit: int | None = None) -> dict[str, Any]:
    """`evaluate_checkpoint` of step `path`, computed once: cached in its run directory as demo-results.json
    (another step, or another `limit`, is evaluated again). `plan` None: the plan the step carries."""
    from olmo2spec.runtime.evaluate import evaluate_checkpoint

    cache = path.parent / CACHE
    cached = _read_cache(cache)
    if cached is None or cached.get("checkpoint") != str(path) or cached.get("limit") != limit:
        cached = {**evaluate_checkpoint(plan, path, data_root, limit), "limit": limit, "checkpoint": str(path)}
        write_json_atomic(cache, cached, sort_keys=True)
    return cached


def _read_cache(cache: Path) -> dict[str, Any] | None:
    """The cached results; None when there are none or they are damaged (then they are computed again)."""
    try:
        cached = json.loads(cache.read_bytes())
    except (OSError, ValueError):  # missing, not JSON, not UTF-8
        return None
    return cached if isinstance(cached, dict) else None


def _pct(row: dict[str, Any], task: str) -> float:
    return float(row[task]["accuracy"]) * 100


def table_cells(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The table's header and cells: per model, held-out loss per source and math accuracy, dev and held-out."""
    sources = sorted(rows[0]["demo-heldout-loss"]) if rows else []
    header = ["model", *(f"loss {s}" for s in sources), "math dev %", "math held-out %"]
    body = [[r["label"], *(f"{r['demo-heldout-loss'][s]:.3f}" for s in sources), f"{_pct(r, 'demo-math-dev'):.1f}",
             f"{_pct(r, 'demo-math-heldout'):.1f}"] for r in rows]
    return header, body


def render_table(rows: list[dict[str, Any]]) -> str:
    return render_grid(*table_cells(rows))


def render_kinds(rows: list[dict[str, Any]], task: str = "demo-math-heldout") -> str:
    """Where the accuracy comes from: correct / n per kind of problem (drill, arithmetic, word problem)."""
    kinds = sorted({kind for r in rows for kind in r[task].get("by_kind", {})})
    if not kinds:
        return ""
    body = []
    for r in rows:
        by_kind = r[task].get("by_kind", {})
        body.append([r["label"], *(f"{by_kind[k]['correct']}/{by_kind[k]['n']}" if k in by_kind else "-"
                                   for k in kinds)])
    return render_grid([f"{task} by kind", *kinds], body)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """What the table shows, as measured: does mid-training lift held-out math, does the soup match the best?"""
    pre = [r for r in rows if r["label"] == "pretrained"]
    ingredients = [r for r in rows if r["label"].startswith("ingredient")]
    soups = [r for r in rows if r["label"].startswith("soup")]
    lines = []
    if pre and ingredients:
        base = _pct(pre[0], "demo-math-heldout")
        lifted = [_pct(r, "demo-math-heldout") for r in ingredients]
        lines.append(f"mid-training: held-out math {base:.1f}% -> {min(lifted):.1f}..{max(lifted):.1f}% "
                     f"({'lifted' if min(lifted) > base else 'NOT lifted by every ingredient'})")
    if soups and ingredients:
        best = max(_pct(r, "demo-math-heldout") for r in ingredients)
        soup = _pct(soups[0], "demo-math-heldout")
        relation = "beats" if soup > best else "matches" if soup == best else "is below"
        lines.append(f"soup: held-out math {soup:.1f}% {relation} the best ingredient's {best:.1f}%")
    return lines
