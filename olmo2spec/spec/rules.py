"""Cross-field rules on a structured recipe: shapes that must agree, names that must exist.

Rules that need resolved numbers (steps, batch layout, memory) live in `plan/resolve.py`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import attrs

from olmo2spec import __version__
from olmo2spec.kinds import kinds_leaving, stage_kind
from olmo2spec.spec.departures import FieldNotFound, resolve_field
from olmo2spec.spec.diagnostics import Path, Reporter
from olmo2spec.spec.fields import SAFE_NAME, shown
from olmo2spec.spec.mixes import MixSpec
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.references import SELECTOR_FORMS, StageRef, parse_ref, stage_of
from olmo2spec.spec.stages import (
    AnnealStage,
    MicroannealStage,
    PrepareStage,
    PretrainStage,
    RlvrStage,
    SoupStage,
    StageSpec,
    TrainStage,
)
from olmo2spec.spec.supported import check_supported
from olmo2spec.spec.training import RuntimeSpec

_SAFE_NAME = re.compile(SAFE_NAME)

__all__ = ["check_rules", "stage_order", "parents", "MIX_PCT_TOLERANCE"]


def _did_you_mean(name: str, known: Iterable[str], what: str) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"declared {what}: {', '.join(known)}" if known else f"no {what} are declared"


def _nearest_head_count(d_model: int, n_heads: int) -> int | None:
    """The head count nearest n_heads (the larger on a tie) that splits d_model into even head_dims.

    The search walks out from n_heads a bounded distance: d_model may be any 64-bit integer.
    """
    for distance in range(4096):
        for h in (n_heads + distance, n_heads - distance):
            if 0 < h <= d_model and d_model % h == 0 and (d_model // h) % 2 == 0:
                return h
    return None


def check_model(recipe: Recipe, report: Reporter) -> None:
    m, tok = recipe.model, recipe.tokenizer
    if m.d_model % m.n_heads:
        nearest = _nearest_head_count(m.d_model, m.n_heads)
        report.error("E020", ("model", "n_heads"), f"n_heads {m.n_heads} does not divide d_model {m.d_model}",
                     "pick n_heads so that d_model / n_heads is a whole head_dim"
                     + (f", e.g. {nearest}" if nearest else " (and even)"))
        return
    head_dim = m.d_model // m.n_heads
    if m.n_heads % m.n_kv_heads:
        report.error("E021", ("model", "n_kv_heads"),
                     f"n_kv_heads {m.n_kv_heads} does not divide n_heads {m.n_heads}",
                     "each key/value head serves a whole group of query heads (GQA); use a divisor of n_heads")
    if head_dim % 2:
        report.error("E022", ("model", "n_heads"), f"head_dim d_model / n_heads = {head_dim} is odd",
                     "RoPE rotates pairs of dimensions; choose n_heads so head_dim is even (OLMo 2: 128)")
    if tok.embedding_rows < tok.vocab_size:
        report.error("E023", ("tokenizer", "embedding_rows"),
                     f"embedding_rows {tok.embedding_rows} is smaller than vocab_size {tok.vocab_size}",
                     f"use at least {tok.vocab_size}, rounded up to a multiple of 128: "
                     f"{-(-tok.vocab_size // 128) * 128}")
    for key in ("eos_id", "pad_id"):
        if getattr(tok, key) >= tok.vocab_size:
            report.error("E024", ("tokenizer", key), f"{key} {getattr(tok, key)} is outside the vocabulary "
                         f"(vocab_size {tok.vocab_size})", "special-token ids must be below vocab_size")


def check_names(recipe: Recipe, report: Reporter) -> None:
    """Source and mix names become file names in the bundle (mixes/<mix>.csv): the safe set only."""
    for table in ("sources", "mixes"):
        for name in getattr(recipe, table):
            if not _SAFE_NAME.fullmatch(name):
                report.error("E013", (table, name), f"{shown(name)} is not a valid name",
                             "use 1-64 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
                             at_key=True)


def check_mixes(recipe: Recipe, report: Reporter) -> None:
    for name, mix in recipe.mixes.items():
        path: Path = ("mixes", name)
        if bool(mix.source_pct) == bool(mix.mix_pct):
            report.error("E053", path, "a mix needs exactly one of `source_pct` and `mix_pct`",
                         "give source % per source like Table 13, or mix % with a `tokens` budget", at_key=True)
        if mix.mix_pct and mix.tokens is None:
            report.error("E053", path + ("mix_pct",), "a mix given by mix % needs a token budget",
                         "add tokens = \"50B\" to the mix", at_key=True)
        check_mix_totals(name, mix, report)
        for column in ("source_pct", "mix_pct", "allow_repeats"):
            entries = getattr(mix, column)
            for source in entries:
                if source not in recipe.sources:
                    report.error("E050", path + (column, source), f"unknown source {source!r}",
                                 _did_you_mean(source, recipe.sources, "sources"), at_key=column != "allow_repeats")
        for source, share in mix.source_pct.items():
            if share.percent > 100 and not share.repeats_declared:
                report.error("E051", path + ("source_pct", source),
                             f"source % {share.percent:g} uses {source!r} {share.percent / 100:g} times",
                             f"repeats must be declared: write {source} = \"{share.percent / 100:g}x\"")


MIX_PCT_TOLERANCE = 0.01
"""How far from 100 printed mix % may sum (Table 13 prints three significant digits)."""


def check_mix_totals(name: str, mix: MixSpec, report: Reporter) -> None:
    """A mix % column sums to 100 (never rescaled behind the user's back), and no mix is empty."""
    path: Path = ("mixes", name)
    total = sum(mix.mix_pct.values())
    if mix.mix_pct and abs(total - 100) > MIX_PCT_TOLERANCE:
        report.error("E054", path + ("mix_pct",), f"mix % values sum to {total:g}, not 100",
                     "make the shares add up to 100 (within 0.01); they are the mix's composition", at_key=True)
    if mix.source_pct and all(share.percent == 0 for share in mix.source_pct.values()):
        report.error("E054", path + ("source_pct",), "every source % is 0: the mix is empty",
                     "give at least one source a positive share", at_key=True)
    if mix.mix_pct and mix.tokens == 0:
        report.error("E054", path + ("tokens",), "the token budget is 0: the mix is empty",
                     "give the budget the mix % divide, e.g. tokens = \"50B\"")


def _check_ref(text: str | None, path: Path, stage_index: dict[str, int], here: int, kinds: tuple[str, ...],
               recipe: Recipe, report: Reporter, what: str, selectors: tuple[str, ...] = ()) -> None:
    """`text` names a stage of one of `kinds` other than stage `here`, with only the `selectors` (seed, step)
    that `what` may carry, each naming something that stage has."""
    if text is None:
        return
    ref = parse_ref(text)
    if ref is None:
        forms = ["STAGE", *(SELECTOR_FORMS[s] for s in selectors)]
        report.error("E046", path, f"{what} {shown(text)} is not a stage reference",
                     f"write {', '.join(forms[:-1])} or {forms[-1]}" if selectors else "name a stage, with no @")
        return
    name = ref.stage
    if name not in stage_index:
        report.error("E040", path, f"no stage named {name!r}", _did_you_mean(name, stage_index, "stages"))
    elif stage_index[name] == here:
        report.error("E041", path, f"{what} names the stage itself", "name the stage it starts from")
    elif recipe.stages[stage_index[name]].kind not in kinds:
        found = recipe.stages[stage_index[name]].kind
        article = "an" if found[0] in "aeiou" else "a"
        report.error("E043", path, f"{what} {name!r} is {article} {found} stage, which leaves no usable result here",
                     f"name a stage of kind {', '.join(kinds)}")
    else:
        _check_selectors(text, ref, recipe.stages[stage_index[name]], path, report, what, selectors)


def _check_selectors(text: str, ref: StageRef, stage: StageSpec, path: Path, report: Reporter, what: str,
                     selectors: tuple[str, ...]) -> None:
    """`@seed:N` names one of an anneal's seeds; `@step:N` is checked by the resolver, which knows the steps."""
    for selector in ("seed", "step"):
        if getattr(ref, selector) is not None and selector not in selectors:
            report.error("E046", path, f"{what} {shown(text)} cannot select a {selector} here",
                         f"name the stage alone: {ref.stage}")
            return
    if ref.seed is None:
        return
    if not isinstance(stage, AnnealStage):
        report.error("E046", path, f"{what} {shown(text)} selects a seed, but {stage.kind} stage {ref.stage!r} has "
                     "no seeds to select from", f"name the stage alone: {ref.stage}")
    elif ref.seed not in stage.seeds:
        report.error("E046", path, f"anneal {ref.stage!r} has no run of seed {ref.seed}",
                     f"select one of its seeds: {', '.join(f'{ref.stage}@seed:{s}' for s in stage.seeds)}")


def parents(stage: StageSpec) -> list[str]:
    """Names of the stages `stage` waits for: its `from`, its soup ingredients, an rlvr stage's `value_from`."""
    names = [stage_of(stage.from_)] if stage.from_ else []
    if isinstance(stage, SoupStage):
        names += [n for n in dict.fromkeys(map(stage_of, stage.ingredients)) if n not in names]
    if isinstance(stage, RlvrStage) and stage.value_from and stage_of(stage.value_from) not in names:
        names.append(stage_of(stage.value_from))  # PPO's value function starts from the reward model
    return names


def stage_order(recipe: Recipe) -> tuple[list[int], list[str]]:
    """Stage indices in dependency order (written order among equals), and a cycle if any.

    Stages merge in from fragments in any order, so position in the file does not matter;
    only the DAG does.
    """
    index = {s.name: i for i, s in reversed(list(enumerate(recipe.stages)))}
    deps = [[index[p] for p in parents(s) if p in index and index[p] != i] for i, s in enumerate(recipe.stages)]
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(deps):
        ready = [i for i in range(len(deps)) if i not in placed and all(d in placed for d in deps[i])]
        if not ready:
            return order, _find_cycle(recipe, deps, placed)
        order.append(ready[0])
        placed.add(ready[0])
    return order, []


def _find_cycle(recipe: Recipe, deps: list[list[int]], placed: set[int]) -> list[str]:
    start = min(i for i in range(len(deps)) if i not in placed)
    seen: list[int] = []
    node = start
    while node not in seen:
        seen.append(node)
        node = next(d for d in deps[node] if d not in placed)
    cycle = seen[seen.index(node):] + [node]
    return [recipe.stages[i].name for i in cycle]


def _from_kinds(stage: StageSpec) -> tuple[str, ...]:
    """Kinds `from` may name: those that leave what this kind starts from (pretraining: data, no weights)."""
    return kinds_leaving(stage_kind(stage.kind).starts_from)


RESERVED_STAGE_NAMES = {"all": "launch/local.sh reads it as every stage"}
"""Words the bundle's launchers give a meaning of their own (options start with '-', which no name can)."""


def run_names(stage: StageSpec) -> list[str]:
    """Checkpoint directories (and job names) a stage's runs use; the resolver names them the same way."""
    if isinstance(stage, AnnealStage):
        return [f"{stage.name}-seed{seed}" for seed in stage.seeds]
    if isinstance(stage, MicroannealStage):
        return [f"{stage.name}-{j}" for j in range(len(stage.candidates))]
    return [stage.name]


def selected_run_names(stage: StageSpec, ref: StageRef) -> list[str]:
    """The runs of `stage` that a reference to it selects: its run of seed `ref.seed`, or all."""
    if ref.seed is not None and isinstance(stage, AnnealStage):
        return [f"{stage.name}-seed{ref.seed}"] if ref.seed in stage.seeds else []
    return run_names(stage)


def check_stage_names(recipe: Recipe, report: Reporter) -> dict[str, int]:
    """Stage names are unique, no launcher keyword, and no two runs share a checkpoint directory."""
    stage_index: dict[str, int] = {}
    for i, stage in enumerate(recipe.stages):
        if stage.name in stage_index:
            report.error("E042", ("stages", i, "name"), f"stage name {stage.name!r} is used twice",
                         "give every stage its own name")
        else:
            stage_index[stage.name] = i
        if stage.name in RESERVED_STAGE_NAMES:
            report.error("E042", ("stages", i, "name"), f"stage name {stage.name!r} is reserved: "
                         f"{RESERVED_STAGE_NAMES[stage.name]}", f"rename it, e.g. {stage.name}-1")
    owner: dict[str, str] = {}
    for i, stage in enumerate(recipe.stages):
        for run in run_names(stage):
            if owner.setdefault(run, stage.name) != stage.name:
                report.error("E042", ("stages", i, "name"), f"stage {stage.name!r} names a run {run!r}, as "
                             f"stage {owner[run]!r} does: their checkpoints would share a directory",
                             "rename one of the stages")
        if isinstance(stage, MicroannealStage):
            for run in run_names(stage):  # each candidate's mix is named like its run
                if run in recipe.mixes:
                    report.error("E042", ("mixes", run), f"mix {run!r} has the name of a mix that "
                                 f"microanneal {stage.name!r} makes for a candidate", "rename the mix",
                                 at_key=True)
    return stage_index


def check_stages(recipe: Recipe, report: Reporter) -> None:
    stage_index = check_stage_names(recipe, report)
    for i, stage in enumerate(recipe.stages):
        path: Path = ("stages", i)
        _check_ref(stage.from_, path + ("from",), stage_index, i, _from_kinds(stage), recipe, report, "`from`",
                   selectors=("seed",))
        if not stage_kind(stage.kind).runnable:
            report.warning("W301", path + ("kind",), f"{stage.kind} stages are not yet runnable: olmo2spec runtime "
                           f"{__version__} cannot run them, so the bundle has no job for this stage and its "
                           "launchers skip it and the stages after it",
                           f"train it with another tool and put its final checkpoint in $CHECKPOINT_ROOT/{stage.name} "
                           "(then launch the stages after it by name), or leave it out of the recipe")
        if stage_kind(stage.kind).needs_from and stage.from_ is None:
            report.error("E011", path + ("from",), f"a {stage.kind} stage needs `from`",
                         "name the stage whose checkpoint it starts from", at_key=True)
        if isinstance(stage, SoupStage):
            if not stage.ingredients:
                report.error("E011", path + ("ingredients",), "a soup needs at least one ingredient", at_key=True)
            check_ingredients(stage, path, stage_index, i, recipe, report)
        if isinstance(stage, TrainStage):
            check_train_stage(stage, path, recipe, report)
        if isinstance(stage, RlvrStage):
            check_value_from(stage, path, stage_index, i, recipe, report)
        if isinstance(stage, PrepareStage):
            for j, source in enumerate(stage.sources):
                if source not in recipe.sources:
                    report.error("E050", path + ("sources", j), f"unknown source {source!r}",
                                 _did_you_mean(source, recipe.sources, "sources"))


def check_ingredients(stage: SoupStage, path: Path, stage_index: dict[str, int], here: int, recipe: Recipe,
                      report: Reporter) -> None:
    """Each ingredient names a stage that leaves a checkpoint, or one run of an anneal; no run comes twice."""
    taken: dict[str, str] = {}  # run -> the ingredient that took it
    for j, text in enumerate(stage.ingredients):
        at = path + ("ingredients", j)
        _check_ref(text, at, stage_index, here, kinds_leaving("checkpoint"), recipe, report, "ingredient",
                   selectors=("seed",))
        if text in stage.ingredients[:j]:
            report.error("E042", at, f"ingredient {text!r} is listed twice",
                         "list each stage once; to count a run more, give weights")
            continue
        ref = parse_ref(text)
        if ref is None or ref.stage not in stage_index:
            continue
        for run in dict.fromkeys(selected_run_names(recipe.stages[stage_index[ref.stage]], ref)):
            if run in taken:  # (a seed repeated within the anneal is E035's)
                report.error("E042", at, f"ingredient {text!r} takes run {run!r}, which ingredient "
                             f"{taken[run]!r} takes too", "list each run once; to count a run more, give weights")
                break
            taken[run] = text


def check_value_from(stage: RlvrStage, path: Path, stage_index: dict[str, int], here: int, recipe: Recipe,
                     report: Reporter) -> None:
    """PPO's value function starts from a reward stage's model (paper section 5); GRPO has no value function."""
    if stage.algorithm == "ppo" and stage.value_from is None:
        report.error("E045", path + ("value_from",), "PPO needs a value function to start from: `value_from` is "
                     "missing", "name the reward stage whose model initialises it, e.g. value_from = \"reward\" "
                     "(a `kind = \"reward\"` stage, paper Table 26)", at_key=True)
    elif stage.algorithm != "ppo" and stage.value_from is not None:
        report.error("E045", path + ("value_from",), f"{stage.algorithm.upper()} has no value function, so "
                     "`value_from` has nothing to initialise", "remove `value_from` (and the reward stage, if "
                     "nothing else reads it)")
    else:
        _check_ref(stage.value_from, path + ("value_from",), stage_index, here, kinds_leaving("reward-model"), recipe,
                   report, "`value_from`")


def check_cycles(recipe: Recipe, report: Reporter) -> None:
    _order, cycle = stage_order(recipe)
    if cycle:
        first = next(i for i, s in enumerate(recipe.stages) if s.name == cycle[0])
        report.error("E041", ("stages", first), f"the stages depend on each other in a cycle: {' -> '.join(cycle)}",
                     "a stage can only start from stages that finish before it; break the cycle", at_key=True)


def check_train_stage(stage: TrainStage, path: Path, recipe: Recipe, report: Reporter) -> None:
    if stage.seq_len is not None and stage.seq_len > recipe.model.max_seq_len:
        report.error("E025", path + ("seq_len",), f"seq_len {stage.seq_len} exceeds model.max_seq_len "
                     f"{recipe.model.max_seq_len}", "raise model.max_seq_len or shorten the stage's sequences")
    if isinstance(stage, (PretrainStage, AnnealStage)):
        if stage.mix not in recipe.mixes:
            report.error("E050", path + ("mix",), f"unknown mix {stage.mix!r}",
                         _did_you_mean(stage.mix, recipe.mixes, "mixes"))
        if (stage.tokens is None) == (stage.steps is None):
            report.error("E033", path, "give exactly one of `tokens` and `steps`",
                         "e.g. tokens = \"50B\"; steps follow from the batch size", at_key=True)
    if isinstance(stage, AnnealStage):
        if not stage.seeds:
            report.error("E035", path + ("seeds",), "an anneal needs at least one data-order seed",
                         "e.g. seeds = [42, 42069, 666]")
        if len(set(stage.seeds)) != len(stage.seeds):
            report.error("E035", path + ("seeds",), f"seeds repeat: {stage.seeds}",
                         "ingredients with the same seed see the same data order; use distinct seeds")
    if isinstance(stage, MicroannealStage):
        for j, candidate in enumerate(stage.candidates):
            for k, source in enumerate(candidate):
                if source not in recipe.sources:
                    report.error("E050", path + ("candidates", j, k), f"unknown source {source!r}",
                                 _did_you_mean(source, recipe.sources, "sources"))
        if stage.general not in recipe.sources:
            report.error("E050", path + ("general",), f"unknown source {stage.general!r}",
                         _did_you_mean(stage.general, recipe.sources, "sources"))
        if not stage.candidates:
            report.error("E011", path + ("candidates",), "a microanneal needs at least one candidate",
                         at_key=True)
        if not 0 < stage.candidate_share < 1:
            report.error("E013", path + ("candidate_share",), "must be between 0 and 1, exclusive "
                         f"(got {stage.candidate_share!r})", "the paper used 0.1 to 0.5")


def check_runtime(recipe: Recipe, report: Reporter) -> None:
    runtime = recipe.runtime
    default_project = attrs.fields(RuntimeSpec).wandb_project.default
    if runtime.wandb_project != default_project and "wandb" not in runtime.metrics_sinks:
        report.warning("W201", ("runtime", "wandb_project"), "a W&B project without the 'wandb' sink logs nothing",
                       'add "wandb" to runtime.metrics_sinks, or drop wandb_project')


def check_departures(recipe: Recipe, report: Reporter) -> None:
    """Each departure names a real field, once: the table explain prints shows that field's value."""
    seen: set[str] = set()
    for i, departure in enumerate(recipe.departures):
        path: Path = ("departures", i, "field")
        if departure.field in seen:
            report.error("E013", path, f"{departure.field!r} has a departure already",
                         "give each field one [[departures]] entry")
            continue
        seen.add(departure.field)
        try:
            resolve_field(recipe, departure.field)
        except FieldNotFound as exc:
            hint = _did_you_mean(exc.part, exc.known, "names") if exc.part else ""
            report.error("E013", path, f"{departure.field!r} names no recipe value: {exc}",
                         hint or "name a value as --set would, e.g. stages.pretrain.lr.warmup_steps")


def check_rules(recipe: Recipe, report: Reporter) -> None:
    check_names(recipe, report)
    check_model(recipe, report)
    check_supported(recipe, report)
    check_mixes(recipe, report)
    check_stages(recipe, report)
    check_cycles(recipe, report)
    check_runtime(recipe, report)
    check_departures(recipe, report)
