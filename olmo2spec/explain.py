"""`olmo2spec explain`: the resolved plan as tables a person reads before spending GPU-hours."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from olmo2spec import __version__
from olmo2spec.kinds import STAGE_KINDS, stage_kind
from olmo2spec.plan.mixes import MixPlan, MixRow
from olmo2spec.plan.plan import Plan, PostTrainStagePlan, SoupStagePlan, StagePlan, TrainStagePlan
from olmo2spec.spec.quantity import format_tokens
from olmo2spec.spec.training import OptimizerSpec
from olmo2spec.terminal import printable

__all__ = ["render_plan", "departures_table", "mix_table", "mix_title", "mix_cells", "MIX_COLUMNS"]

MIX_COLUMNS = ("source", "source tokens", "source %", "mix %", "tokens", "repeats")
"""The columns of a mix table (Table 13's, with repeats)."""


def _table(title: str, *columns: str, right_from: int = 1) -> Table:
    table = Table(title=Text(printable(title)), title_justify="left", title_style="bold", header_style="bold cyan")
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i >= right_from else "left")
    return table


def _row(table: Table, *cells: str, **options: Any) -> None:
    """Cells as Text: shown as written, never read as rich markup, control characters escaped (`printable`)."""
    table.add_row(*(Text(printable(cell)) for cell in cells), **options)


def _si(n: float) -> str:
    return f"{n:.3g}"


def model_table(plan: Plan) -> Table:
    m, p = plan.model, plan.model.params
    t = _table("Model", "", "value")
    attention = "MHA" if m.n_kv_heads == m.n_heads else f"GQA ({m.n_heads // m.n_kv_heads} q heads per kv head)"
    rows = [
        ("shape", f"d_model {m.d_model}, {m.n_layers} layers, {m.n_heads}/{m.n_kv_heads} heads x {m.head_dim}, "
                  f"MLP {m.mlp_hidden}"),
        ("attention", f"{attention}, RoPE theta {m.rope_theta:,.0f}, QK-norm {'on' if m.qk_norm else 'off'}"),
        ("norm", f"{m.norm} RMSNorm, eps {m.norm_eps:g}"),
        ("vocabulary", f"{plan.tokenizer.name}: {plan.tokenizer.vocab_size:,} ids, "
                       f"{plan.tokenizer.embedding_rows:,} embedding rows"),
        ("parameters", f"{p.total:,} ({format_tokens(p.total)})"),
        ("non-embedding", f"{p.non_embedding:,}"),
        ("FLOPs / token", f"{_si(m.flops_per_token)} (6 x non-embedding + attention at {m.max_seq_len})"),
    ]
    for row in rows:
        _row(t, *row)
    t.columns[1].justify = "left"
    return t


def _lr(stage: TrainStagePlan | PostTrainStagePlan) -> str:
    lr = stage.lr
    warm = f"warmup {lr.warmup_steps:,}, " if lr.warmup_steps else ""
    stop = "" if lr.stop_step >= lr.horizon_steps else f", stops at {lr.lr_at_stop:.3g} (truncated)"
    return f"{lr.kind} {warm}{lr.peak:.3g} -> {lr.end:.3g} at {lr.horizon_steps:,}{stop}"


def _shape(stage: StagePlan) -> tuple[str, str, str, str, str]:
    if isinstance(stage, (TrainStagePlan, PostTrainStagePlan)):
        par = stage.parallel
        runs = len(stage.runs) if isinstance(stage, TrainStagePlan) else 1
        tokens = format_tokens(stage.tokens) if isinstance(stage, TrainStagePlan) else f"{stage.examples:,} ex"
        layout = (f"{par.nodes}n x {par.gpus // par.nodes}, shard {par.shard_gpus} x {par.replicate}, "
                  f"mb {par.micro_batch} x {par.grad_accum}{', AC' if par.activation_checkpointing else ''}"
                  f"{', 1 FSDP unit' if par.fsdp_units == 'model' else ''}")
        return str(runs), f"{stage.steps:,}", tokens, layout, f"{stage.memory.total_gib:.1f}"
    if isinstance(stage, SoupStagePlan):
        weights = "uniform" if len(set(stage.weights)) == 1 else "weighted"
        n = len(stage.ingredients)
        return str(n), "", "", f"{weights} average of {n} run{'s' * (n != 1)}", ""
    return "", "", "", "", ""


def stages_table(plan: Plan) -> Table:
    t = _table("Stages (dependency order)", "stage", "kind", "after", "runs", "steps", "tokens/run",
               "layout", "GiB/GPU", "GPU-h", right_from=3)
    for stage in plan.stages:
        cost = getattr(stage, "cost", None)
        kind = stage.kind if stage_kind(stage.kind).runnable else f"{stage.kind} (not yet runnable)"
        _row(t, stage.name, kind, ", ".join(stage.depends_on), *_shape(stage),
                  _hours(cost.gpu_hours) if cost else "")
    t.columns[6].justify = "left"
    not_runnable = sorted({s.kind for s in plan.stages if not stage_kind(s.kind).runnable},
                          key=list(STAGE_KINDS).index)
    if not_runnable:
        t.caption = Text(printable(
            f"not yet runnable: olmo2spec runtime {__version__} cannot run {', '.join(not_runnable)} stages yet; "
            "the bundle's launchers refuse them by name and a full run skips them and the stages after them"))
        t.caption_justify = "left"
    return t


def _hours(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def schedules_table(plan: Plan) -> Table:
    t = _table("Learning rates", "stage", "batch", "tokens/step", "schedule", right_from=1)
    for stage in plan.stages:
        if isinstance(stage, TrainStagePlan):
            _row(t, stage.name, f"{stage.batch_size} x {stage.seq_len}", f"{stage.tokens_per_step:,}", _lr(stage))
        elif isinstance(stage, PostTrainStagePlan):
            _row(t, stage.name, f"{stage.batch_size} ex", "", _lr(stage))
    t.columns[3].justify = "left"
    return t


def _optimizer(spec: OptimizerSpec, keys: list[str]) -> str:
    shown = {"betas": lambda: f"betas ({spec.betas[0]:g}, {spec.betas[1]:g})", "eps": lambda: f"eps {spec.eps:g}",
             "weight_decay": lambda: f"weight decay {spec.weight_decay:g}",
             "decay_embeddings": lambda: f"decay embeddings {'on' if spec.decay_embeddings else 'off'}",
             "decay_norms": lambda: f"decay norms {'on' if spec.decay_norms else 'off'}",
             "grad_clip": lambda: f"clip {spec.grad_clip:g}", "z_loss": lambda: f"z-loss {spec.z_loss:g}"}
    return ", ".join(shown[k]() for k in keys if k in shown)


def optimizer_table(plan: Plan) -> Table:
    """The recipe's [optimizer], then each training stage that changes it, with only what it changes."""
    recipe = plan.optimizer
    keys = ["betas", "eps", "weight_decay", "decay_embeddings", "decay_norms", "grad_clip", "z_loss"]
    t = _table("Optimizer (AdamW)", "stage", "settings", right_from=2)
    _row(t, "[optimizer]", _optimizer(recipe, keys))
    for stage in plan.stages:
        if isinstance(stage, (TrainStagePlan, PostTrainStagePlan)):
            changed = [k for k in keys if getattr(stage.optimizer, k) != getattr(recipe, k)]
            _row(t, stage.name, _optimizer(stage.optimizer, changed) if changed else "as [optimizer]")
    return t


def masking_table(plan: Plan) -> Table:
    """Each training stage's repeated n-gram masking (section 3.1): on with its thresholds, or off."""
    data = plan.data
    t = _table("Instance masking (section 3.1)", "stage", "repeated n-grams", right_from=2)
    on = f"masked: {data.ngram_min_repeats}+ repeats of a 1..{data.ngram_max_period}-gram"
    for stage in plan.stages:
        if isinstance(stage, TrainStagePlan):
            _row(t, stage.name, on if stage.ngram_masking else "trained on (masking off)")
    return t


def mix_table(mix: MixPlan) -> Table:
    t = _table(mix_title(mix), *MIX_COLUMNS)
    for i, row in enumerate(mix.rows):
        _row(t, *mix_cells(row), end_section=bool(mix.groups) and i == len(mix.rows) - 1)
    for row in mix.groups:  # subtotals, below a rule
        _row(t, *mix_cells(row), style="italic")
    return t


def mix_title(mix: MixPlan) -> str:
    return f"Mix {mix.name}: {format_tokens(mix.tokens)} tokens"


def mix_cells(row: MixRow) -> tuple[str, ...]:
    """A row of a mix table as explain prints it (the notebook shows the same text)."""
    return (row.source, format_tokens(row.source_tokens), f"{row.source_pct:.2f}", f"{row.mix_pct:.2f}",
            format_tokens(row.tokens), f"{row.repeats:.2f}x")


def soups_table(plan: Plan) -> Table | None:
    """Which runs each soup averages, with their weights (a soup may take one run of an anneal, not all)."""
    soups = [s for s in plan.stages if isinstance(s, SoupStagePlan)]
    if not soups:
        return None
    t = _table("Soups", "soup", "ingredient run", "weight", right_from=2)
    for soup in soups:
        for i, (run, weight) in enumerate(zip(soup.ingredients, soup.weights, strict=True)):
            _row(t, soup.name if i == 0 else "", run, f"{weight:.4g}", end_section=i == len(soup.ingredients) - 1)
    return t


def memory_table(plan: Plan) -> Table:
    t = _table(f"Memory per GPU, GiB (capacity {plan.cluster.gpu_memory_gib:g}; activations with the chosen "
               "setting, and without / with checkpointing)", "stage", "params", "grads", "optimizer", "transient",
               "activations", "no AC / AC", "logits", "reserved", "total")
    for stage in plan.stages:
        if isinstance(stage, (TrainStagePlan, PostTrainStagePlan)):
            m = stage.memory
            both = f"{m.activations_no_ac_gib:.1f} / {m.activations_full_ac_gib:.1f}"
            _row(t, stage.name, *(f"{v:.1f}" for v in (m.params_gib, m.grads_gib, m.optimizer_gib,
                      m.transient_gib, m.activations_gib)), both,
                      *(f"{v:.1f}" for v in (m.logits_gib, m.reserved_gib, m.total_gib)))
    return t


def estimates_table(plan: Plan) -> Table:
    e, c = plan.estimates, plan.cluster
    t = _table("Estimates", "", "value")
    rows = [
        ("base tokens", f"{format_tokens(e.base_tokens)} (pretraining + mid-training, every run)"),
        ("base FLOPs, 6ND", f"{e.base_flops_6n:.3g} ({e.base_flops_6n / 1e23:.2f} x 10^23, Table 6's convention)"),
        ("base FLOPs, with attention", f"{e.base_flops:.3g}"),
        ("all stages FLOPs", f"{e.total_flops:.3g}"),
        ("GPU-hours", f"{e.gpu_hours:,.0f} at {c.mfu:.0%} MFU of {c.gpu_peak_tflops:g} TFLOP/s ({c.gpu})"),
        ("GPU energy", f"{e.gpu_energy_mwh:,.1f} MWh at {c.gpu_power_kw:g} kW per GPU"),
        ("facility energy", f"{e.energy_mwh:,.1f} MWh (PUE {c.pue:g})"),
        ("CO2", f"{e.co2_tonnes:,.1f} t ({c.carbon_intensity:g} kg/kWh)"),
        ("water", f"{e.water_kl:,.0f} kL ({c.wue:g} L/kWh)"),
    ]
    for row in rows:
        _row(t, *row)
    t.columns[1].justify = "left"
    return t


def departures_table(plan: Plan) -> Table:
    """The recipe's [[departures]]: each field's value in the recipe beside the paper's, and what it follows."""
    t = _table("Departures from the paper (the recipe follows the released runs)", "field", "paper", "recipe",
               "follows", right_from=4)
    for d in plan.departures:
        _row(t, d.field, d.paper, d.recipe, d.source + (f" ({d.note})" if d.note else ""))
    return t


def render_plan(plan: Plan, console: Console) -> None:
    title = Text(printable(plan.recipe.name), style="bold")
    if plan.recipe.description:
        title.append(f": {printable(plan.recipe.description)}", style="")
    mixes = [mix_table(m) for m in plan.mixes.values()]
    soups = [t for t in (soups_table(plan),) if t is not None]
    console.print(Group(title, model_table(plan), stages_table(plan), schedules_table(plan), optimizer_table(plan),
                        masking_table(plan), *mixes, *soups,
                        memory_table(plan), estimates_table(plan),
                        *([departures_table(plan)] if plan.departures else [])))
