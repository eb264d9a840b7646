"""The demo's closing table, in the spirit of the paper's Tables 9 and 14: the pretrained model,
each microanneal candidate (section 4.4.2), each mid-training ingredient and the soup, on
held-out loss per source and math accuracy with the development and held-out splits apart; then
each post-trained model (sft, dpo, rlvr: prompted in the chat format), and for them and the soup
they start from the instruct columns (runtime/instruct_eval.py): held-out chat answers parseable
and exact, held-out preference accuracy, held-out math verifier reward and exact match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo2spec.atomic import write_json_atomic
from olmo2spec.kinds import stage_kind
from olmo2spec.plan.plan import Plan, PostTrainStagePlan, SoupStagePlan, TrainStagePlan
from olmo2spec.runtime.checkpoint import CheckpointError, latest_complete, marker_digest
from olmo2spec.textgrid import render_grid

if TYPE_CHECKING:
    from olmo2spec.runtime.instruct_eval import InstructData

__all__ = ["CACHE", "INSTRUCT_CACHE", "cached_evaluation", "cached_instruct", "demo_rows", "labelled_runs",
           "table_cells", "render_kinds", "render_table", "verdicts", "instruct_verdicts"]

CACHE = "demo-results.json"
"""A run directory's cached evaluation of its newest checkpoint."""
INSTRUCT_CACHE = "demo-instruct-results.json"
"""A run directory's cached instruct evaluation (held-out post-training data) of its newest checkpoint."""
POST_TRAINED = ("sft", "dpo", "rlvr")


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
        elif isinstance(stage, PostTrainStagePlan) and stage.kind in POST_TRAINED:
            algorithm = stage.hyperparameters.get("algorithm") if stage.kind == "rlvr" else None
            rows.append((f"{stage.name} ({algorithm})" if algorithm else stage.name, stage.name))
    return rows


def _stage_of(plan: Plan, run: str) -> SoupStagePlan | PostTrainStagePlan | None:
    """The soup or post-training stage whose output `run` is; None for the runs of training stages."""
    for stage in plan.stages:
        if isinstance(stage, SoupStagePlan | PostTrainStagePlan) and stage.name == run:
            return stage
    return None


def demo_rows(plan: Plan, checkpoint_root: Path, data_root: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Evaluate each model once (results cached beside its checkpoints as demo-results.json); post-trained
    models in the chat format, and they and the soups also on the held-out post-training data (the
    instruct columns, cached as demo-instruct-results.json) when the plan has post-training stages."""
    from olmo2spec.runtime.instruct_eval import InstructData

    instruct = InstructData(plan, data_root)
    # the instruct columns once post-training has begun: before, the soup's alone would compare nothing
    post_trained = any(latest_complete(checkpoint_root / stage.name) is not None for stage in plan.stages
                       if isinstance(stage, PostTrainStagePlan) and stage.kind in POST_TRAINED)
    rows = []
    for label, run in labelled_runs(plan):
        path = latest_complete(checkpoint_root / run)
        if path is None:
            continue
        stage = _stage_of(plan, run)
        chat = stage is not None and stage_kind(stage.kind).chat_model
        row = {"label": label, "run": run,
               **cached_evaluation(plan, path, data_root, limit, prompt_format="chat" if chat else "base")}
        if stage is not None and instruct.tasks and post_trained:
            row["instruct"] = cached_instruct(plan, path, instruct)
            row["kind"] = stage.kind
            if isinstance(stage, PostTrainStagePlan):
                row["from"] = stage.init_from
        rows.append(row)
    return rows


def cached_evaluation(plan: Plan | None, path: Path, data_root: Path, limit: int | None = None, *,
                      prompt_format: str = "base") -> dict[str, Any]:
    """`evaluate_checkpoint` of step `path`, computed once: cached in its run directory as demo-results.json.
    Another step, `limit` or prompt format, or the same step saved again (another COMPLETE marker digest: a run
    trained again to the same step number) is evaluated again. `plan` None: the plan the step carries."""
    from olmo2spec.runtime.evaluate import evaluate_checkpoint

    cache = path.parent / CACHE
    cached = _read_cache(cache)
    key = {"checkpoint": str(path), "complete": _digest(path), "limit": limit}
    if cached is None or any(cached.get(k) != v for k, v in key.items()) \
            or cached.get("prompt_format", "base") != prompt_format:
        cached = {**evaluate_checkpoint(plan, path, data_root, limit, prompt_format=prompt_format), **key}
        write_json_atomic(cache, cached, sort_keys=True)
    return cached


def cached_instruct(plan: Plan, path: Path, data: InstructData) -> dict[str, Any]:
    """`evaluate_instruct` of step `path` on `data`, computed once: cached in its run
    directory as demo-instruct-results.json, keyed by the step (its path and COMPLETE marker digest) and the
    held-out files' contents."""
    from olmo2spec.runtime.checkpoint.integrity import sha256_file
    from olmo2spec.runtime.evaluate import EvalDataError, load_model
    from olmo2spec.runtime.instruct_eval import evaluate_instruct

    try:
        files = {task: sha256_file(data.files[task]) for task in data.tasks}
    except FileNotFoundError as exc:
        raise EvalDataError(f"{exc.filename} not found: rebuild the demo corpus there "
                            "(`olmo2spec demo-data DATA_ROOT` writes the held-out post-training files)") from None
    key = {"checkpoint": str(path), "complete": _digest(path), "files": files, "response_len": data.response_len,
           "verifier": data.verifier, "temperature": data.temperature, "seq_len": data.seq_len}
    cache = path.parent / INSTRUCT_CACHE
    cached = _read_cache(cache)
    if cached is None or cached.get("key") != key:
        cached = {**evaluate_instruct(plan, load_model(plan, path), data), "key": key}
        write_json_atomic(cache, cached, sort_keys=True)
    return cached


def _digest(path: Path) -> str | None:
    """The step's marker digest; None when it cannot be read (the evaluation then says what is wrong)."""
    try:
        return marker_digest(path)
    except CheckpointError:
        return None


def _read_cache(cache: Path) -> dict[str, Any] | None:
    """The cached results; None when there are none or they are damaged (then they are computed again)."""
    try:
        cached = json.loads(cache.read_bytes())
    except (OSError, ValueError):  # missing, not JSON, not UTF-8
        return None
    return cached if isinstance(cached, dict) else None


def _pct(row: dict[str, Any], task: str) -> float:
    return float(row[task]["accuracy"]) * 100


INSTRUCT_COLUMNS = (("chat", "format", "chat ok %"), ("chat", "exact", "chat exact %"),
                    ("preferences", "accuracy", "pref acc %"), ("math", "reward", "rl reward %"),
                    ("math", "exact", "rl exact %"))
"""(task, number, header) of the instruct columns: shares, in per cent, on held-out post-training data."""


def table_cells(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The table's header and cells: per model, held-out loss per source and math accuracy, dev and held-out;
    where a row has instruct results, a column per instruct number ("-" in the rows without)."""
    sources = sorted(rows[0]["demo-heldout-loss"]) if rows else []
    header = ["model", *(f"loss {s}" for s in sources), "math dev %", "math held-out %"]
    body = [[r["label"], *(f"{r['demo-heldout-loss'][s]:.3f}" for s in sources), f"{_pct(r, 'demo-math-dev'):.1f}",
             f"{_pct(r, 'demo-math-heldout'):.1f}"] for r in rows]
    columns = [c for c in INSTRUCT_COLUMNS if any(c[0] in r.get("instruct", {}) for r in rows)]
    header += [title for _, _, title in columns]
    for r, cells in zip(rows, body, strict=True):
        instruct = r.get("instruct", {})
        cells += [f"{100 * instruct[task][number]:.1f}" if task in instruct else "-" for task, number, _ in columns]
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
    return lines + instruct_verdicts(rows)


_EFFECTS = {"sft": (("chat", "format", "chat answers parseable"),),
            "dpo": (("preferences", "accuracy", "preference accuracy"),),
            "rlvr": (("math", "reward", "math verifier reward"), ("math", "exact", "math exact match"))}
"""What each post-training stage should raise over the model it starts from, on held-out data."""


def instruct_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per post-trained model: did it raise, on held-out data, what its stage is for, over its `from` model?"""
    by_run = {r["run"]: r for r in rows if "run" in r}
    lines = []
    for r in rows:
        start = by_run.get(r.get("from", ""))
        if start is None or "instruct" not in start:
            continue
        parts = []
        for task, number, what in _EFFECTS.get(r.get("kind", ""), ()):
            if task not in r["instruct"] or task not in start["instruct"]:
                continue
            before, after = 100 * start["instruct"][task][number], 100 * r["instruct"][task][number]
            parts.append(f"{what} {before:.1f}% -> {after:.1f}% ({'raised' if after > before else 'NOT raised'})")
        if parts:
            lines.append(f"{r['label']} over {start['label']}, held-out: {'; '.join(parts)}")
    return lines
