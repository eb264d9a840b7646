"""The training stages (pretrain, anneal, microanneal): one run, on FSDP2, from the plan.

train() -> train_step() -> forward_backward(), as torchtitan layers its trainer. The loop
has no per-step host-device sync: per-step values go to device buffers that a bookkeeping
thread reads every `log_every` steps. Python's GC runs at the same step on every rank.
A run resumes from its latest complete checkpoint; an anneal starts from its predecessor's
final checkpoint, optimizer state included.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from olmo2spec.data.chat import ChatFormatError, chat_file
from olmo2spec.data.loader import LoaderError, MixtureLoader, loader_for_run
from olmo2spec.data.sources import DataRootError, data_root
from olmo2spec.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer
from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import PostTrainStagePlan, RunPlan, TrainStagePlan
from olmo2spec.runtime.bundle import RunContext, wanted_device
from olmo2spec.runtime.checkpoint import Checkpointer, CheckpointError, final_step, latest_complete, read_marker
from olmo2spec.runtime.distributed import Dist, init_distributed, shutdown
from olmo2spec.runtime.loss import labels_for, loss_sums
from olmo2spec.runtime.metrics import Interval, MetricsThread, StepBuffers
from olmo2spec.runtime.model import ModelArgs, Transformer, Trunk
from olmo2spec.runtime.optim import apply_lr, build_optimizer
from olmo2spec.runtime.parallelize import apply_parallelism, build_mesh
from olmo2spec.runtime.sinks import SinkError, open_sinks, require_sinks

__all__ = ["Trainer", "run_train_stage", "run_with", "TrainingError"]


Record = TypeVar("Record")

class TrainingError(Exception):
    """A run cannot start or continue; the message says why and what to do."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _say(text: str) -> None:
    print(text, flush=True)


class Trainer:
    # what it trains
    ctx: RunContext
    stage: TrainStagePlan
    run: RunPlan
    # where
    dist: Dist
    micro_batch: int
    grad_accum: int
    # model, optimizer, data
    model: Trunk
    """The language model (`Transformer`), or the kind's own `model_class` (the reward stage's scalar model)."""
    model_class: type[Trunk] = Transformer
    sharded: FSDPModule
    """`model` itself, as FSDP's root module (gradient sync)."""
    optimizer: torch.optim.Optimizer
    loader: MixtureLoader
    # bookkeeping
    checkpointer: Checkpointer
    metrics: MetricsThread
    per_example_metrics: tuple[str, ...] = ()
    """A kind's own metrics, averaged over a step's examples (StepBuffers' `examples`) in metrics.jsonl."""
    step: int

    def __init__(self, ctx: RunContext, dist_info: Dist) -> None:
        self.ctx, self.dist = ctx, dist_info
        self.bind_stage()
        require_sinks(ctx.plan)
        self.build_layout()
        self.build_model()
        self.optimizer = build_optimizer(self.model, self.stage.optimizer)
        self.build_loader()
        policy = ctx.plan.checkpoint
        self.checkpointer = Checkpointer(ctx.run_dir, keep_last=policy.keep_last,
                                         permanent_every=policy.permanent_every, async_save=policy.async_save,
                                         group=dist_info.checkpoint_group, plan=ctx.plan)
        self.step = 0

    # -- setup (a stage kind's trainer overrides these) ----------------------------------------
    def bind_stage(self) -> None:
        """Take this kind's stage plan from the context: self.stage, self.run, self.seq_len."""
        assert isinstance(self.ctx.stage, TrainStagePlan)
        self.stage = self.ctx.stage
        self.run = next(r for r in self.stage.runs if r.name == self.ctx.run)
        self.seq_len = self.stage.seq_len

    def tokens_before(self, step: int) -> int:
        """Tokens the run has processed before optimizer step `step` (for the metrics of a resumed run)."""
        return step * self.stage.tokens_per_step

    def layout_text(self) -> str:
        return f"micro-batch {self.micro_batch} x {self.grad_accum}"

    def build_layout(self) -> None:
        rows, world = self.stage.batch_size, self.dist.world_size
        if rows % world:
            raise TrainingError(f"batch_size {rows} does not split over {world} processes; use a divisor of {rows}")
        per_rank = rows // world
        self.micro_batch = math.gcd(self.stage.parallel.micro_batch, per_rank)
        self.grad_accum = per_rank // self.micro_batch

    def build_model(self) -> None:
        torch.manual_seed(self.ctx.plan.recipe.seed)
        with torch.device("meta"):
            self.model = self.model_class(ModelArgs.from_plan(self.ctx.plan))  # seq_len <= max_seq_len: checked
        par = self.stage.parallel
        mesh = build_mesh(self.dist.device.type, self.dist.world_size, par.shard_gpus)
        on_gpu = self.dist.device.type == "cuda"
        self.sharded = apply_parallelism(self.model, mesh, bf16=on_gpu and par.mixed_precision == "bf16",
                                         activation_checkpointing=par.activation_checkpointing,
                                         compile_blocks=par.compile and on_gpu, fsdp_units=par.fsdp_units)
        self.model.to_empty(device=self.dist.device)
        with warnings.catch_warnings():  # DTensor random init on CPU meshes warns; the init is what we want
            warnings.filterwarnings("ignore", message="DTensor random operators")
            self.model.init_weights()

    def build_loader(self) -> None:
        root = data_root(None, self.ctx.plan.data.root)
        self.loader = loader_for_run(self.ctx.plan, self.stage, self.run, data_root=root,
                                     rank=self.dist.rank, world_size=self.dist.world_size)

    # -- starting point ----------------------------------------------------------------------
    def restore(self) -> bool:
        """Resume this run, or start from the predecessor; False when the run is already finished."""
        own = latest_complete(self.ctx.run_dir)
        if own is not None:
            marker = self.checkpointer.load(own, self.model, self.optimizer)
            if marker.get("final"):
                return False
            self.step = int(marker["step"])
            self.say(f"resuming {self.ctx.run} from {own} (step {self.step:,})")
            return True
        self.start()
        return True

    def from_step(self) -> Path:
        """The final checkpoint of the stage this one starts `from`.

        Raises:
            TrainingError: (exit CHECKPOINT) naming the stage and why there is none.
        """
        try:
            return final_step(self.ctx.checkpoint_root / self.stage.init_from)
        except CheckpointError as exc:
            raise TrainingError(f"{self.stage.name} starts from {self.stage.init_from}: {exc}",
                                ExitCode.CHECKPOINT) from None

    def start(self) -> None:
        """Begin a run that has no checkpoint of its own: from the predecessor's final checkpoint, if any."""
        if self.stage.init_from:
            path = self.from_step()
            if self.stage.restore_optimizer and read_marker(path).get("optimizer") is False:
                raise TrainingError(f"{self.stage.name} restores the optimizer state of {self.stage.init_from}, but "
                                    f"{path} holds none (a soup averages weights only): set restore_optimizer = false")
            self.checkpointer.load(path, self.model, self.optimizer if self.stage.restore_optimizer else None)
            self.say(f"starting {self.run.name} from {path}"
                     f"{' with its optimizer state' if self.stage.restore_optimizer else ''}")

    def say(self, text: str) -> None:
        if self.dist.main:
            _say(text)

    # -- the loop ----------------------------------------------------------------------------
    def forward_backward(self, tokens: torch.Tensor, labels: torch.Tensor, scale: float, sync: bool
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        self.sharded.set_requires_gradient_sync(sync)
        logits = self.model(tokens)
        ce, z, _ = loss_sums(logits, labels, self.stage.optimizer.z_loss)
        torch.autograd.backward((ce + z) * scale)  # what Tensor.backward calls; typed, unlike it
        return ce.detach(), z.detach()

    def train_step(self, buffers: StepBuffers, index: int) -> float:
        lr = apply_lr(self.optimizer, self.stage.lr, self.step)
        batch = self.loader.batch(self.step)
        tokens = torch.from_numpy(batch.tokens).to(self.dist.device, non_blocking=True)
        mask = torch.from_numpy(batch.label_mask).to(self.dist.device, non_blocking=True)
        labels = labels_for(tokens, mask)
        counted = int(batch.label_mask.sum()) * (tokens.shape[1] - 1)  # known on the host: no sync
        scale = 1.0 / counted if counted else 0.0
        ce_sum = torch.zeros((), device=self.dist.device)
        z_sum = torch.zeros((), device=self.dist.device)
        mb = self.micro_batch
        for i in range(self.grad_accum):
            rows = slice(i * mb, (i + 1) * mb)
            ce, z = self.forward_backward(tokens[rows], labels[rows], scale, sync=i == self.grad_accum - 1)
            ce_sum += ce
            z_sum += z
        norm = self.optimizer_step()
        buffers.put(index, ce_sum=ce_sum, z_sum=z_sum, tokens=float(counted), instances=float(len(batch.tokens)),
                    masked=float(batch.masked), grad_norm=norm)
        self.step += 1
        return lr

    def train(self) -> int:
        if not self.restore():
            self.say(f"{self.ctx.run} is already complete ({latest_complete(self.ctx.run_dir)})")
            return 0
        plan, total = self.ctx.plan, self.stage.steps
        log_every, gc_every = plan.runtime.log_every, plan.runtime.gc_every
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.ctx.run_dir / "metrics.jsonl"
        on_planned_device = (self.dist.device.type == "cuda") == (plan.cluster.gpu != "cpu")
        if self.dist.main:
            _truncate_metrics(metrics_path, self.step)
        self.metrics = MetricsThread(
            path=metrics_path, group=self.dist.metrics_group, rank=self.dist.rank, stage=self.stage.name,
            total_steps=total, flops_per_token=self.stage.cost.flops / max(1, self.stage.cost.tokens),
            # MFU against the plan's device; a GPU recipe tried on a CPU has none to compare with
            peak_flops=plan.cluster.gpu_peak_tflops * 1e12 if on_planned_device else 0.0,
            world_size=self.dist.world_size, seq_len=self.seq_len, spike_window=plan.runtime.spike_window,
            spike_sigmas=plan.runtime.spike_sigmas, stop_file=os.environ.get("OLMO2SPEC_STOP_FILE"), say=self.say,
            sinks=open_sinks(plan, self.stage, self.ctx.run, self.ctx.run_dir, self.step) if self.dist.main else [],
            masked_warn_share=plan.data.instance_filter_warn_share, per_example=self.per_example_metrics)
        self.metrics.tokens_seen = self.tokens_before(self.step)
        self.say(f"{self.stage.name}: run {self.ctx.run}, steps {self.step:,} -> {total:,}, {self.dist.world_size} "
                 f"process(es) on {self.dist.device.type}, {self.layout_text()}, "
                 f"{self.model.num_params():,} parameters")
        gc.disable()  # collected below at the same step on every rank (paper section 6.4)
        try:
            return self._loop(total, log_every, gc_every)
        finally:
            self.checkpointer.finish()  # a background save in flight is completed (or fails loudly)
            self.metrics.close()
            gc.enable()

    def _loop(self, total: int, log_every: int, gc_every: int) -> int:
        buffers = StepBuffers(log_every, self.dist.device, self.per_example_metrics)
        pending: Future[dict[str, Any]] | None = None
        every = self.ctx.plan.checkpoint.every_steps
        while self.step < total:
            lrs: list[float] = []
            first, start = self.step, time.perf_counter()
            while self.step < total and len(lrs) < log_every:
                lrs.append(self.train_step(buffers, len(lrs)))
                if self.step % gc_every == 0:
                    gc.collect(1)
            interval = Interval(first, buffers.snapshot(len(lrs)), lrs, time.perf_counter() - start)
            previous, pending = pending, self.metrics.submit(interval)
            verdicts = [previous.result()] if previous is not None else []
            due = self.step // every > first // every and self.step < total
            if due:  # a checkpoint must hold only good steps: hear about this interval too first
                verdicts.append(pending.result())
                pending = None
            if (code := self._react(verdicts, checkpoint_due=due)) is not None:
                return code
        if pending is not None and (code := self._react([pending.result()], checkpoint_due=False)) is not None:
            return code
        self.checkpointer.save(self.step, self.model, self.optimizer, self._meta(), final=True)
        self.say(f"{self.ctx.run} finished: {self.step:,} steps; final checkpoint in {self.ctx.run_dir}")
        return 0

    def _react(self, verdicts: list[dict[str, Any]], checkpoint_due: bool) -> int | None:
        """Act on what the bookkeeping thread found: the same on every rank, whose values are reduced."""
        for verdict in verdicts:
            if verdict["first_bad_step"] is not None:
                self.checkpointer.finish()  # a save in flight holds only good steps: let it complete
                good = latest_complete(self.ctx.run_dir)
                self.say(f"error: loss or gradient norm not finite at step {verdict['first_bad_step']:,}; stopping "
                         f"without saving the corrupted state. The last good checkpoint is {good or 'none'}; "
                         "lower the learning rate or check the data before resuming.")
                return ExitCode.NONFINITE
        stop = any(v["stop"] for v in verdicts)
        if stop or checkpoint_due:
            self.checkpointer.save(self.step, self.model, self.optimizer, self._meta())
        if stop:
            self.say(f"stopping at step {self.step:,} on request (time limit near): checkpoint saved; "
                     "the job requeues and resumes from it")
            return 0
        return None

    def read_dataset(self, read: Callable[[Path, Tokenizer, int | None], list[Record]], noun: str
                     ) -> tuple[Path, list[Record]]:
        """A post-training stage's dataset under ${DATA_ROOT}/post-training/: its path and first `examples`
        records, tokenized by `read`; a missing DATA_ROOT, a bad record or too few records stop the run."""
        plan, stage = self.ctx.plan, self.stage
        assert isinstance(stage, PostTrainStagePlan), stage.kind  # only post-training stages read one
        dataset, examples = stage.dataset, stage.examples
        root = data_root(None, plan.data.root)
        if root is None:
            raise DataRootError(f"dataset {dataset!r} is under ${{DATA_ROOT}}/post-training/, but DATA_ROOT "
                                "is not set: export DATA_ROOT=<the directory `olmo2spec demo-data` wrote>")
        path = chat_file(root, dataset)
        try:
            records = read(path, load_tokenizer(plan.tokenizer.name), examples)
        except (ChatFormatError, TokenizerError) as exc:
            raise TrainingError(str(exc), ExitCode.DATA) from None
        if len(records) < examples:
            raise TrainingError(f"{path} holds {len(records):,} {noun}, fewer than the stage's examples "
                                f"{examples:,}: lower stages.{stage.name}.examples or add data", ExitCode.DATA)
        return path, records

    def optimizer_step(self) -> torch.Tensor:
        """Clip the gradients to the stage's norm, step and clear them; returns the norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.stage.optimizer.grad_clip,
                                              foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _meta(self) -> dict[str, Any]:
        return {"stage": self.stage.name, "run": self.ctx.run, "tokens": self.tokens_before(self.step),
                "world_size": self.dist.world_size, "steps_total": self.stage.steps}


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records past the checkpoint: the resumed run writes them again."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _exit_code(exc: Exception) -> ExitCode:
    if isinstance(exc, (LoaderError, DataRootError)):
        return ExitCode.DATA
    if isinstance(exc, CheckpointError):
        return ExitCode.CHECKPOINT
    if isinstance(exc, SinkError):  # a metrics sink's package missing
        return ExitCode.NOT_RUNNABLE
    return exc.exit_code if isinstance(exc, TrainingError) else ExitCode.INTERNAL


def run_train_stage(ctx: RunContext) -> int:
    """The runner of pretrain, anneal and microanneal stages (named in olmo2spec/kinds.py's table)."""
    return run_with(Trainer, ctx)


def run_with(trainer: type[Trainer], ctx: RunContext) -> int:
    """Run one run with `trainer` (Trainer or a stage kind's subclass) in this process group; its exit code."""
    info = init_distributed(wanted_device(ctx.plan) == "cuda")
    try:
        return trainer(ctx, info).train()
    except (TrainingError, LoaderError, DataRootError, CheckpointError, SinkError) as exc:
        if info.main:
            print(f"error: {ctx.stage.name}: {exc}", file=sys.stderr)
        return _exit_code(exc)
    finally:
        if dist.is_initialized():
            dist.barrier()
        shutdown()
