"""Recipe -> Plan: every default applied once, every derived number computed once.

Problems that only show once numbers are resolved (a batch that does not divide, a warmup
longer than the stage, a model that fits no GPU) are reported through the same `Reporter`
as the spec's own rules, pointing at the field to change.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import attrs

from olmo2spec import __version__
from olmo2spec.kinds import stage_kind
from olmo2spec.plan.counts import ParamCounts, count_params, flops_per_token
from olmo2spec.plan.environment import training_env
from olmo2spec.plan.evals import SUITES
from olmo2spec.plan.memory import MemoryEstimate, estimate_memory
from olmo2spec.plan.mixes import MixPlan, mix_from_mix_pct, mix_from_source_pct
from olmo2spec.plan.parallel import MAX_GPUS, MAX_PER_RANK_BATCH, NoFit, choose_layout
from olmo2spec.plan.plan import (
    PLAN_VERSION,
    ClusterPlan,
    Cost,
    Departure,
    Estimates,
    EvalStagePlan,
    ExportStagePlan,
    ModelPlan,
    ParallelPlan,
    Plan,
    PostTrainStagePlan,
    PrepareStagePlan,
    RunPlan,
    SoupStagePlan,
    StagePlan,
    TrainStagePlan,
    to_dict,
)
from olmo2spec.plan.schedule import LrSchedule, build_schedule
from olmo2spec.plan.soup_weights import SoupWeightsError, normalise_soup_weights
from olmo2spec.spec.departures import DepartureSpec, FieldNotFound, resolve_field, show_value
from olmo2spec.spec.diagnostics import Path, Reporter
from olmo2spec.spec.hardware import GPUS
from olmo2spec.spec.recipe import Recipe
from olmo2spec.spec.references import parse_ref, stage_of
from olmo2spec.spec.rules import parents, stage_order
from olmo2spec.spec.schedules import ConstantSchedule, CosineSchedule, LinearSchedule, Schedule, WsdSchedule
from olmo2spec.spec.stages import (
    AnnealStage,
    DpoStage,
    EvalStage,
    ExportStage,
    MicroannealStage,
    PostTrainStage,
    PrepareStage,
    PretrainStage,
    RewardStage,
    RlvrStage,
    SoupStage,
    StageSpec,
    TrainStage,
)
from olmo2spec.spec.training import resolve_optimizer

__all__ = ["resolve"]



def _own_settings(stage: PostTrainStage) -> dict[str, Any]:
    """The kind's own settings (DPO beta, PPO clipping, ...): its class's fields that neither the shared
    post-training fields nor the plan's own fields (epochs) hold. A field added to the class lands here."""
    shared = attrs.fields_dict(PostTrainStage).keys() | attrs.fields_dict(PostTrainStagePlan).keys()
    return {a.name: getattr(stage, a.name) for a in attrs.fields(type(stage)) if a.name not in shared}


class _Resolver:
    def __init__(self, recipe: Recipe, report: Reporter) -> None:
        self.recipe = recipe
        self.report = report
        self.gpu = GPUS[recipe.cluster.gpu]
        self.device_name = "CPU process" if self.gpu.name == "cpu" else f"{self.gpu.name} GPU"
        self.counts = count_params(recipe.model, recipe.tokenizer)
        self.sizes: dict[str, int] = {name: int(s.tokens) for name, s in recipe.sources.items()}
        self.groups = {name: s.group for name, s in recipe.sources.items() if s.group}
        self.mixes: dict[str, MixPlan] = {}
        self.done: dict[str, StagePlan] = {}
        self.failed: set[str] = set()
        """Stages that could not be resolved (their errors are reported); what follows them is skipped."""

    # -- helpers ---------------------------------------------------------------------------
    def runs_of(self, reference: str | None) -> list[str]:
        """Checkpoints a finished stage leaves, one per run; of an anneal named `STAGE@seed:N`, that seed's run."""
        ref = parse_ref(reference or "")
        stage = self.done.get(ref.stage) if ref is not None else None
        if ref is None or stage is None:
            return []
        if isinstance(stage, TrainStagePlan):
            return [run.name for run in stage.runs if ref.seed is None or run.seed == ref.seed]
        return [stage.name]

    def parent_train(self, stage: StageSpec) -> TrainStagePlan | PostTrainStagePlan | None:
        parent = self.done.get(stage_of(stage.from_ or ""))
        return parent if isinstance(parent, (TrainStagePlan, PostTrainStagePlan)) else None

    def cost(self, tokens: int, seq_len: int, gpus: int, multiplier: float = 1.0) -> Cost:
        c = self.recipe.cluster
        flops = tokens * flops_per_token(self.recipe.model, self.counts, seq_len) * multiplier
        gpu_hours = flops / (self.gpu.peak_tflops * 1e12 * c.mfu) / 3600
        gpu_energy = gpu_hours * c.gpu_power_kw
        energy = gpu_energy * c.pue
        return Cost(tokens=tokens, flops=flops, flops_6n=6.0 * self.counts.total * tokens * multiplier,
                    gpu_hours=gpu_hours, wall_hours=gpu_hours / gpus, gpu_energy_kwh=gpu_energy, energy_kwh=energy,
                    co2_kg=energy * c.carbon_intensity, water_l=energy * c.wue)

    # -- mixes -----------------------------------------------------------------------------
    def build_mixes(self) -> None:
        for name, mix in self.recipe.mixes.items():
            if any(s not in self.sizes for s in [*mix.source_pct, *mix.mix_pct]):
                continue  # reported by the rules
            if mix.source_pct:
                pct = {s: share.percent for s, share in mix.source_pct.items()}
                self.mixes[name] = mix_from_source_pct(name, mix.description, pct, self.sizes, self.groups)
            elif mix.mix_pct and mix.tokens and sum(mix.mix_pct.values()) > 0:
                plan = mix_from_mix_pct(name, mix.description, mix.mix_pct, mix.tokens, self.sizes, self.groups)
                for row in plan.rows:
                    if row.source_pct > 100 + 1e-9 and row.source not in mix.allow_repeats:
                        self.report.error(
                            "E051", ("mixes", name, "mix_pct", row.source),
                            f"mix % {mix.mix_pct[row.source]:g} of {mix.tokens:,} tokens needs {row.tokens:,} "
                            f"tokens of {row.source!r}, which has {row.source_tokens:,} "
                            f"({row.source_pct:.1f}%, {row.repeats:.2f}x)",
                            f"declare the repeats with allow_repeats = [\"{row.source}\"], or lower the share")
                self.mixes[name] = plan
            if name in self.mixes and self.mixes[name].tokens == 0:
                # every share rounds to no tokens, or its sources are empty: a stage would read nothing
                self.report.error("E054", ("mixes", name), "the mix holds 0 tokens",
                                  "give its sources a size (tokens) and the mix larger shares", at_key=True)

    # -- layout ----------------------------------------------------------------------------
    def layout(self, stage: TrainStage | PostTrainStage, path: Path, batch: int, seq_len: int,
               trainable: int = 1, frozen: int = 0) -> tuple[ParallelPlan, MemoryEstimate] | None:
        c = self.recipe.cluster
        nodes = stage.nodes or c.nodes
        gpus = nodes * c.gpus_per_node
        if gpus > MAX_GPUS:
            self.report.error("E013", path + ("nodes",) if stage.nodes else ("cluster", "nodes"),
                              f"{nodes:,} nodes x {c.gpus_per_node:,} is {gpus:,} GPUs, more than the "
                              f"{MAX_GPUS:,} this compiler plans for", "use the cluster's real size")
            return None
        if batch // gpus > MAX_PER_RANK_BATCH:
            self.report.error("E030", path + ("batch_size",), f"batch_size {batch:,} puts {batch // gpus:,} "
                              f"sequences on each of {gpus:,} ranks, more than {MAX_PER_RANK_BATCH:,}",
                              "OLMo 2 trains on 1,024 to 2,048 sequences per step; use a realistic batch")
            return None
        if batch % gpus and not isinstance(stage, RlvrStage):  # RLVR rollouts split unevenly, see below
            self.report.error("E030", path + ("batch_size",),
                              f"batch_size {batch} is not divisible by the {gpus} data-parallel ranks "
                              f"({nodes} node{'s' * (nodes != 1)} x {c.gpus_per_node})",
                              f"use a multiple of {gpus} (e.g. {max(gpus, batch // gpus * gpus)}), or change nodes")
            return None
        per_rank = -(-batch // gpus)  # RLVR: the largest share of a rollout batch any rank trains on
        if stage.micro_batch != "auto" and per_rank % int(stage.micro_batch):
            self.report.error("E030", path + ("micro_batch",),
                              f"micro_batch {stage.micro_batch} does not divide the {per_rank} sequences per rank "
                              f"(batch_size {batch} / {gpus} ranks)",
                              f"use a divisor of {per_rank}; gradient accumulation makes up the rest")
            return None
        if stage.shard_gpus != "auto" and gpus % int(stage.shard_gpus):
            self.report.error("E034", path + ("shard_gpus",), f"shard_gpus {stage.shard_gpus} does not divide the "
                              f"{gpus} GPUs", f"use a divisor of {gpus}, ideally whole nodes of {c.gpus_per_node}")
            return None

        def estimate(shard: int, mb: int, ac: bool, units: str) -> MemoryEstimate:
            return estimate_memory(model=self.recipe.model, counts=self.counts, gpu=self.gpu, seq_len=seq_len,
                                   micro_batch=mb, shard_gpus=shard, checkpointing=ac,
                                   vocab_rows=self.recipe.tokenizer.embedding_rows, trainable_copies=trainable,
                                   frozen_copies=frozen, whole_model_unit=units == "model")

        gpu_run = self.gpu.name != "cpu"
        # On GPUs each block's all-gather overlaps the previous block's compute; on CPU nothing overlaps
        # and each gloo collective costs the same few ms whatever its size, so fewer and larger wins.
        units = {"auto": ["block"] if gpu_run else ["model", "block"]}.get(stage.fsdp_units, [stage.fsdp_units])

        try:
            chosen = choose_layout(gpus=gpus, gpus_per_node=c.gpus_per_node, per_rank_batch=per_rank,
                                   shard=stage.shard_gpus, micro_batch=stage.micro_batch,
                                   checkpointing=stage.activation_checkpointing, fsdp_units=units,
                                   estimate=estimate)
        except NoFit as exc:
            m = exc.best
            self.report.error(
                "E060", path, f"does not fit in {m.capacity_gib:.1f} GiB per {self.device_name}: the smallest "
                f"layout tried (shard over {exc.shard_gpus} GPU{'s' * (exc.shard_gpus != 1)}, micro-batch "
                f"{exc.micro_batch}) needs {m.total_gib:.1f} GiB "
                f"(parameters {m.params_gib:.1f}, gradients {m.grads_gib:.1f}, optimizer {m.optimizer_gib:.1f}, "
                f"activations {m.activations_gib:.1f}, logits {m.logits_gib:.1f})",
                "shard over more GPUs (shard_gpus), add nodes, turn on activation_checkpointing, or shorten "
                "sequences", at_key=True)
            return None
        parallel = ParallelPlan(
            nodes=nodes, gpus=gpus, shard_gpus=chosen.shard_gpus, replicate=gpus // chosen.shard_gpus,
            micro_batch=chosen.micro_batch, grad_accum=per_rank // chosen.micro_batch,
            activation_checkpointing=chosen.checkpointing, fsdp_units=chosen.fsdp_units, compile=stage.compile,
            mixed_precision="bf16" if gpu_run else "fp32", backend="nccl" if gpu_run else "gloo")
        return parallel, chosen.memory

    # -- schedules -------------------------------------------------------------------------
    def schedule(self, lr: Schedule, path: Path, steps: int, tokens_per_step: int,
                 inherited: float | None) -> LrSchedule | None:
        path = path + ("lr",)
        if isinstance(lr, CosineSchedule):
            horizon = max(1, round(lr.horizon / tokens_per_step))
            if steps > horizon:
                self.report.error("E032", path + ("horizon",),
                                  f"the stage runs {steps:,} steps, past the cosine horizon of {horizon:,} steps "
                                  f"({lr.horizon:,} tokens)", "truncate before the horizon: raise `horizon` or "
                                  "train on fewer tokens")
            warmup, peak, end, decay = lr.warmup_steps, lr.peak, lr.peak * lr.final, None
            kind = "cosine"
        elif isinstance(lr, LinearSchedule):
            if lr.start == "inherit" and inherited is None:
                self.report.error("E044", path + ("start",), "\"inherit\" needs a `from` stage that trains",
                                  "give a number, or set `from` to a pretraining or anneal stage")
                return None
            peak = float(inherited if lr.start == "inherit" and inherited is not None else lr.start)
            warmup = lr.warmup_steps or round(lr.warmup_ratio * steps)
            horizon, end, decay, kind = steps, lr.end, None, "linear"
        elif isinstance(lr, WsdSchedule):
            warmup, peak, end, horizon = lr.warmup_steps, lr.peak, lr.peak * lr.final, steps
            decay, kind = steps - round(lr.decay_fraction * steps), "wsd"
        else:
            assert isinstance(lr, ConstantSchedule)
            warmup, peak, end, horizon, decay, kind = lr.warmup_steps, lr.value, lr.value, steps, None, "constant"
        if warmup >= steps:
            self.report.error("E031", path + ("warmup_steps",),
                              f"warmup of {warmup:,} steps is not shorter than the stage's {steps:,} steps",
                              "shorten the warmup or train longer")
            return None
        return build_schedule(kind=kind, warmup_steps=warmup, peak=peak, end=end, horizon_steps=horizon,
                              stop_step=steps, decay_start=decay)

    # -- stages ----------------------------------------------------------------------------
    def train_stage(self, stage: TrainStage, path: Path) -> TrainStagePlan | None:
        parent = self.parent_train(stage)
        batch = stage.batch_size or (parent.batch_size if parent else None)
        seq_len = stage.seq_len or (getattr(parent, "seq_len", None) if parent else None)
        for key, value in (("batch_size", batch), ("seq_len", seq_len)):
            if value is None:
                self.report.error("E011", path + (key,), f"{key} is missing and there is no `from` stage to "
                                  "inherit it from", f"set {key}", at_key=True)
        if batch is None or seq_len is None:
            return None
        tps = batch * seq_len
        seed = self.recipe.recipe.seed
        if isinstance(stage, MicroannealStage):
            runs, mix_names, tokens = self.microanneal_mixes(stage, path)
            steps = max(1, round(tokens / tps)) if tokens else 1
        else:
            assert isinstance(stage, (PretrainStage, AnnealStage))
            if (stage.tokens is None) == (stage.steps is None):
                return None  # reported by the rules
            steps = stage.steps or max(1, round((stage.tokens or 0) / tps))
            seeds = stage.seeds if isinstance(stage, AnnealStage) else [stage.data_seed or seed]
            runs = [RunPlan(name=stage.name if isinstance(stage, PretrainStage) else f"{stage.name}-seed{s}",
                            seed=s, mix=stage.mix) for s in seeds]
            mix_names = [stage.mix]
        if not runs:
            return None
        budgets = [self.mixes[m].tokens for m in mix_names if m in self.mixes and self.mixes[m].tokens]
        mix_epochs = max((steps * tps / b for b in budgets), default=0.0)
        # rounding to whole steps may overshoot a budget by part of one step; that is no repeat
        if budgets and steps * tps - min(budgets) >= tps and not stage.repeat_mix:
            self.report.error("E052", path + ("tokens",),
                              f"the stage trains on {steps * tps:,} tokens but its mix holds "
                              f"{steps * tps / mix_epochs:,.0f} ({mix_epochs:.3f} epochs)",
                              "train on fewer tokens, enlarge the mix, or set repeat_mix = true to repeat it")
        inherited = parent.lr.lr_at_stop if parent else None
        lr = self.schedule(stage.lr, path, steps, tps, inherited)
        layout = self.layout(stage, path, batch, seq_len)
        if lr is None or layout is None:
            return None
        parallel, memory = layout
        restore = stage.restore_optimizer if isinstance(stage, AnnealStage) else isinstance(stage, MicroannealStage)
        source = self.done.get(stage_of(stage.from_ or ""))
        # starts from a checkpoint: a training stage's first (or selected) run, or a soup; never a prepare stage
        init = self.runs_of(stage.from_)[0] if source is not None and source.kind != "prepare" else ""
        return TrainStagePlan(
            name=stage.name, kind=stage.kind, description=stage.description, depends_on=self.depends(stage),
            init_from=init, restore_optimizer=restore and parent is not None, runs=runs,
            batch_size=batch, seq_len=seq_len, tokens_per_step=tps, steps=steps, tokens=steps * tps,
            mix_epochs=mix_epochs, lr=lr, optimizer=resolve_optimizer(self.recipe.optimizer, stage.optimizer),
            ngram_masking=self.recipe.data.ngram_masking if stage.ngram_masking is None else stage.ngram_masking,
            parallel=parallel, memory=memory,
            cost=self.cost(steps * tps * len(runs), seq_len, parallel.gpus))

    def microanneal_mixes(self, stage: MicroannealStage, path: Path) -> tuple[list[RunPlan], list[str], int]:
        """One mix per candidate: `candidate_share` of the budget from the candidate, the rest general."""
        runs, names = [], []
        if stage.general not in self.sizes:
            return [], [], 0
        for j, candidate in enumerate(stage.candidates):
            if any(s not in self.sizes for s in candidate):
                continue
            slug = "+".join(candidate)
            candidate_size = sum(self.sizes[s] for s in candidate)
            wanted = stage.candidate_share * stage.tokens
            repeats = wanted / candidate_size if candidate_size else math.inf
            if repeats > stage.max_repeats + 1e-9:
                self.report.error("E051", path + ("candidates", j),
                                  f"candidate {slug!r} has {candidate_size:,} tokens; {stage.candidate_share:g} of "
                                  f"{stage.tokens:,} needs it {repeats:.2f} times, over max_repeats "
                                  f"{stage.max_repeats:g}", "lower tokens or candidate_share, or raise max_repeats")
                continue
            general = stage.tokens - wanted
            if general > self.sizes[stage.general]:
                self.report.error("E051", path + ("general",),
                                  f"candidate {slug!r} needs {general:,.0f} tokens of {stage.general!r}, which has "
                                  f"{self.sizes[stage.general]:,}", "lower tokens or use a larger general source")
                continue
            pct = {s: 100 * repeats for s in candidate}
            pct[stage.general] = 100 * general / self.sizes[stage.general]
            name = f"{stage.name}-{j}"
            self.mixes[name] = mix_from_source_pct(name, f"microanneal candidate {slug}", pct, self.sizes, self.groups)
            runs.append(RunPlan(name=name, seed=stage.seed or self.recipe.recipe.seed, mix=name))
            names.append(name)
        return runs, names, stage.tokens

    def post_train_stage(self, stage: PostTrainStage, path: Path) -> PostTrainStagePlan | None:
        if isinstance(stage, RlvrStage):
            if stage.batch_size % stage.samples_per_prompt:
                group = stage.samples_per_prompt
                self.report.error("E030", path + ("batch_size",),
                                  f"batch_size {stage.batch_size} episodes is not a whole number of prompts of "
                                  f"samples_per_prompt {group}",
                                  f"use a multiple of {group} (e.g. {max(group, stage.batch_size // group * group)})")
                return None
            epochs, steps = 1, max(1, math.ceil(stage.episodes / stage.batch_size))
            tokens = stage.episodes * (stage.max_seq_len + stage.response_len)
            # policy forward+backward per update epoch, generation ~ a forward, a frozen reference forward
            multiplier = (stage.update_epochs + 1 / 3 + 1 / 3) * (2 if stage.algorithm == "ppo" else 1)
            trainable, frozen, seq = (2 if stage.algorithm == "ppo" else 1), 1, stage.max_seq_len + stage.response_len
        else:
            epochs = stage.epochs  # type: ignore[attr-defined]
            steps = max(1, math.ceil(stage.examples * epochs / stage.batch_size))
            pairs = 2 if isinstance(stage, (DpoStage, RewardStage)) else 1  # chosen and rejected
            tokens = stage.examples * epochs * stage.max_seq_len * pairs
            multiplier = (1 + 1 / 3) if isinstance(stage, DpoStage) else 1.0  # DPO: reference forward
            trainable, frozen, seq = 1, (1 if isinstance(stage, DpoStage) else 0), stage.max_seq_len
        if seq > self.recipe.model.max_seq_len:
            self.report.error("E025", path + ("max_seq_len",), f"sequences of {seq} tokens exceed model.max_seq_len "
                              f"{self.recipe.model.max_seq_len}", "shorten max_seq_len (and response_len)")
        lr = self.schedule(stage.lr, path, steps, stage.batch_size * seq, self.parent_lr(stage))
        batch_sequences = stage.batch_size * (2 if isinstance(stage, (DpoStage, RewardStage)) else 1)
        layout = self.layout(stage, path, batch_sequences, seq, trainable, frozen)
        if lr is None or layout is None:
            return None
        parallel, memory = layout
        hyper = _own_settings(stage)
        return PostTrainStagePlan(
            name=stage.name, kind=stage.kind, description=stage.description, depends_on=self.depends(stage),
            init_from=self.runs_of(stage.from_)[-1] if self.runs_of(stage.from_) else "",
            dataset=stage.dataset, examples=stage.examples, epochs=epochs, batch_size=stage.batch_size,
            max_seq_len=stage.max_seq_len, steps=steps, seed=stage.seed or self.recipe.recipe.seed, lr=lr,
            optimizer=resolve_optimizer(self.recipe.optimizer, stage.optimizer),
            hyperparameters=hyper, parallel=parallel, memory=memory,
            cost=self.cost(tokens, seq, parallel.gpus, multiplier))

    def soup_weights(self, stage: SoupStage, path: Path, runs: int, names: list[str]) -> list[float] | None:
        """The weights normalised to sum to 1; None (reported) when they cannot be."""
        weights = stage.weights or [1.0] * runs
        path = path + ("weights",)
        if len(weights) != runs:
            self.report.error("E036", path, f"{len(weights)} weights for {runs} ingredient runs ({', '.join(names)})",
                              "give one weight per run, or none")
            return None
        if not runs:
            return None
        try:
            return normalise_soup_weights(weights, names)
        except SoupWeightsError as exc:
            self.report.error("E036", path, exc.message, exc.fix)
            return None

    def parent_lr(self, stage: StageSpec) -> float | None:
        parent = self.parent_train(stage)
        return parent.lr.lr_at_stop if parent else None

    def depends(self, stage: StageSpec) -> list[str]:
        return parents(stage)

    def stage(self, stage: StageSpec, path: Path) -> StagePlan | None:
        common: dict[str, Any] = dict(name=stage.name, kind=stage.kind, description=stage.description,
                                      depends_on=self.depends(stage), nodes=stage.nodes or 1)
        if isinstance(stage, TrainStage):
            return self.train_stage(stage, path)
        if isinstance(stage, PostTrainStage):
            return self.post_train_stage(stage, path)
        # jobs that are not data-parallel training run on one node unless the stage asks for more
        if isinstance(stage, PrepareStage):
            return PrepareStagePlan(**common, sources=stage.sources or sorted(self.recipe.sources),
                                    text_field=stage.text_field, filters=stage.filters)
        if isinstance(stage, SoupStage):
            ingredients = [run for reference in stage.ingredients for run in self.runs_of(reference)]
            weights = self.soup_weights(stage, path, len(ingredients), ingredients)
            if not ingredients or weights is None:
                return None
            return SoupStagePlan(**common, ingredients=ingredients, weights=weights)
        if isinstance(stage, EvalStage):
            dev, heldout = SUITES[stage.suite]
            return EvalStagePlan(**common, targets=self.runs_of(stage.from_), suite=stage.suite,
                                 dev_tasks=[*dev, *stage.tasks], heldout_tasks=list(heldout))
        assert isinstance(stage, ExportStage)
        runs = self.runs_of(stage.from_)
        return ExportStagePlan(**common, source=runs[-1] if runs else "", format=stage.format)

    # -- the whole plan --------------------------------------------------------------------
    def resolve(self) -> Plan | None:
        self.build_mixes()
        order, _cycle = stage_order(self.recipe)
        for i in order:
            stage = self.recipe.stages[i]
            if any(name in self.failed for name in parents(stage)):
                self.failed.add(stage.name)  # reporting it would only repeat its predecessor's error
                continue
            resolved = self.stage(stage, ("stages", i))
            if resolved is None:
                self.failed.add(stage.name)
            else:
                self.done[stage.name] = resolved
        if self.report.has_errors:
            return None
        r = self.recipe
        seq = max([s.seq_len for s in self.done.values() if isinstance(s, TrainStagePlan)] or [r.model.max_seq_len])
        model = ModelPlan(**attrs.asdict(r.model, recurse=False), head_dim=r.model.d_model // r.model.n_heads,
                          kv_dim=r.model.n_kv_heads * (r.model.d_model // r.model.n_heads), params=self.counts,
                          flops_per_token=flops_per_token(r.model, self.counts, seq))
        fields = attrs.asdict(r.cluster, recurse=False)
        fields["env"] = {**training_env(self.gpu.name != "cpu"), **r.cluster.env}
        cluster = ClusterPlan(**fields, gpu_memory_gib=self.gpu.memory_gib,
                              gpu_peak_tflops=self.gpu.peak_tflops,
                              total_gpus=r.cluster.nodes * r.cluster.gpus_per_node)
        stages = list(self.done.values())
        plan = Plan(version=PLAN_VERSION, olmo2spec_version=__version__, recipe=r.recipe, model=model,
                    tokenizer=r.tokenizer, optimizer=r.optimizer, data=r.data, checkpoint=r.checkpoint,
                    runtime=r.runtime,
                    cluster=cluster, sources=dict(r.sources), mixes=self.mixes, stages=stages,
                    estimates=_estimates(stages, self.counts))
        plan = attrs.evolve(plan, departures=[_departure(d, r, plan) for d in r.departures])
        for field, value in _non_finite(to_dict(plan), "plan"):
            # every input is finite, so a derived figure overflowed: extreme cluster figures (mfu 1e-300)
            self.report.error("E013", ("cluster",), f"{field} comes out as {value} from these figures",
                              "use realistic values for mfu, gpu_power_kw, pue, carbon_intensity and wue",
                              at_key=True)
            return None
        return plan


def _departure(spec: DepartureSpec, recipe: Recipe, plan: Plan) -> Departure:
    """The entry with its field's value: the recipe's, or where the recipe leaves it unset (a stage's optimizer
    override) the value the plan resolved for it."""
    value = resolve_field(recipe, spec.field)
    if value is None:
        with contextlib.suppress(FieldNotFound):  # a key the plan does not have either: "not set"
            value = resolve_field(plan, spec.field)
    return Departure(field=spec.field, paper=spec.paper, recipe=show_value(value), source=spec.source,
                     note=spec.note)


def _non_finite(value: Any, path: str) -> Iterator[tuple[str, float]]:
    """Every NaN or infinite float in a plan's JSON tree, with its dotted path."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{path}[{index}]")


def _estimates(stages: list[StagePlan], counts: ParamCounts) -> Estimates:
    base = [s for s in stages if isinstance(s, TrainStagePlan) and stage_kind(s.kind).base_training]
    costed = [s.cost for s in stages if isinstance(s, (TrainStagePlan, PostTrainStagePlan))]
    energy = sum(c.energy_kwh for c in costed)
    return Estimates(
        base_tokens=sum(s.cost.tokens for s in base), base_flops_6n=sum(s.cost.flops_6n for s in base),
        base_flops=sum(s.cost.flops for s in base), total_flops=sum(c.flops for c in costed),
        gpu_hours=sum(c.gpu_hours for c in costed), gpu_energy_mwh=sum(c.gpu_energy_kwh for c in costed) / 1000,
        energy_mwh=energy / 1000,
        co2_tonnes=sum(c.co2_kg for c in costed) / 1000, water_kl=sum(c.water_l for c in costed) / 1000)


def resolve(recipe: Recipe, report: Reporter) -> Plan | None:
    """Resolve a checked recipe; None when `report` received errors."""
    return _Resolver(recipe, report).resolve()
