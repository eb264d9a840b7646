"""The `rlvr` stage: reinforcement learning with verifiable rewards, the pretraining trainer with another step.

A step (open-instruct's GRPO and PPO trainers are the reference) is one rollout and its updates:

1. its `batch_size` episodes: `batch_size / samples_per_prompt` prompts of the run's order (each
   epoch a permutation seeded by (seed, epoch)), each sampled `samples_per_prompt` times by the
   policy (runtime/sampling.py: one KV-cached decode of all rows, noise from (seed, step));
2. each response's reward: `verifier_reward` x the prompt's verifier's score, or `no_eos_penalty`
   for a response that never emitted eos;
3. the reference model's log-probs of the responses: the `from` checkpoint, frozen (a chained
   RLVR stage's reference is its own start, as open-instruct's);
4. advantages: GRPO's group-normalised rewards (each prompt's samples a group); PPO's GAE over
   per-token rewards (-kl_beta x KL, the episode's reward at its last token) and the value model's
   values (runtime/ppo_value.py), whitened over the rollout's tokens on all ranks;
5. `update_epochs` optimizer steps over the whole rollout, each the clipped policy loss (GRPO: plus
   kl_beta x KL, estimator `kl_estimator`; PPO: the value model's clipped loss x value_coef, its own
   optimizer step), averaged over the rollout's response tokens. GRPO's "old" log-probs of the ratio
   are the first update's forward, before any step (no extra forward); PPO needs them (and the
   values) before its advantages: one forward of each model, no grad.

The updates' forwards see each response right after its prompt, padding at the end (plain causal
attention at the sampler's positions; sampling.episode_inputs).

Rank r takes prompts r, r + world, ... of a step (whole groups), every rank runs as many
micro-batches (one with no rows left runs a row with weight 0: FSDP's collectives need every
rank), and the loss is divided by the rollout's token count over all ranks, so 2 processes train
as 1 does. The start (the `from` stage's final weights, a fresh optimizer), the loop, checkpoints,
resume, metrics and exit codes are the Trainer's; everything a step does is a function of the
step and the checkpointed weights, so a resumed run repeats exactly what it would have done.
metrics.jsonl gains, per step: reward, verifier_reward, kl (per response, at the rollout),
response_length, entropy (per token), eos_rate and episodes_per_s; PPO's value_loss.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import attrs
import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from olmo2spec.data.prompts import Prompt, prompt_reader
from olmo2spec.data.tokenizer import load_tokenizer
from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import PostTrainStagePlan
from olmo2spec.posttrain.verifiers import GroundTruthError, VerifierError, require, scorer
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.runtime.checkpoint import Checkpointer, CheckpointError, final_step, latest_complete, read_marker
from olmo2spec.runtime.distributed import Dist
from olmo2spec.runtime.evaluate import EvalError, load_model
from olmo2spec.runtime.metrics import StepBuffers
from olmo2spec.runtime.model import ModelArgs, Transformer
from olmo2spec.runtime.optim import apply_lr, build_optimizer
from olmo2spec.runtime.parallelize import apply_parallelism, build_mesh
from olmo2spec.runtime.ppo_value import VALUE_DIR, PairedCheckpointer, start_value_model
from olmo2spec.runtime.rl_math import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    grpo_advantages,
    kl_per_token,
    masked_sum,
    ppo_rewards,
)
from olmo2spec.runtime.sampling import (
    banned_ids,
    episode_inputs,
    response_logits,
    response_slots,
    sample,
    sampling_generator,
    token_logps,
)
from olmo2spec.runtime.scalar_model import ScalarModel
from olmo2spec.runtime.trainer import Trainer, TrainingError, run_with

__all__ = ["RlvrSettings", "RlvrTrainer", "run_rlvr_stage"]


@attrs.frozen(kw_only=True)
class RlvrSettings:
    """The stage's own settings, from the plan's hyperparameters (spec/stages.py RlvrStage documents them)."""

    algorithm: str
    samples_per_prompt: int
    kl_beta: float
    kl_estimator: str
    clip_eps: float
    update_epochs: int
    temperature: float
    response_len: int
    verifiers: tuple[str, ...]
    verifier_reward: float
    no_eos_penalty: float
    value_coef: float
    gamma: float
    gae_lambda: float
    value_from: str | None
    """PPO: the reward stage whose final checkpoint starts the value model (None: the policy's trunk)."""

    @classmethod
    def from_hyperparameters(cls, hyper: dict[str, Any]) -> RlvrSettings:
        verifiers = hyper["verifiers"]
        assert isinstance(verifiers, list), verifiers
        return cls(algorithm=str(hyper["algorithm"]), samples_per_prompt=int(hyper["samples_per_prompt"]),
                   kl_beta=float(hyper["kl_beta"]), kl_estimator=str(hyper.get("kl_estimator", "k3")),
                   clip_eps=float(hyper["clip_eps"]), update_epochs=int(hyper["update_epochs"]),
                   temperature=float(hyper["temperature"]), response_len=int(hyper["response_len"]),
                   verifiers=tuple(str(v) for v in verifiers), verifier_reward=float(hyper["verifier_reward"]),
                   no_eos_penalty=float(hyper["no_eos_penalty"]), value_coef=float(hyper["value_coef"]),
                   gamma=float(hyper["gamma"]), gae_lambda=float(hyper["gae_lambda"]),
                   value_from=str(hyper["value_from"]) if hyper.get("value_from") else None)


@attrs.frozen
class Rollout:
    """One rank's episodes of a step, as tensors on the device (B episodes, L prompt and R response slots)."""

    tokens: torch.Tensor
    """(B, P + R): each row's prompt, its response right after it, padding at the end (sampling.episode_inputs)."""
    starts: torch.Tensor
    """(B,) the slot predicting each response's first token."""
    real_tokens: int
    """Prompt and response tokens of all rows (the metrics' tokens/s)."""
    responses: torch.Tensor
    """(B, R)"""
    mask: torch.Tensor
    """(B, R) float: 1 on response tokens."""
    eos: torch.Tensor
    """(B,) bool"""
    rewards: torch.Tensor
    """(B,) the scalar reward of each episode."""
    verified: torch.Tensor
    """(B,) verifier_reward x score (before the eos penalty)."""


class RlvrTrainer(Trainer):
    # narrower than the Trainer's TrainStagePlan: the base methods reading fields only that has are overridden
    stage: PostTrainStagePlan  # type: ignore[assignment]
    settings: RlvrSettings
    prompts: list[Prompt]
    reference: Transformer
    """The frozen `from` model, in this process alone."""
    sampler: Transformer
    """An unsharded copy of the policy that samples (its weights copied from the policy each step)."""
    per_example_metrics: tuple[str, ...] = ("reward", "verifier_reward", "kl", "response_length", "entropy",
                                            "eos_rate", "episodes_per_s")

    def __init__(self, ctx: RunContext, dist_info: Dist) -> None:
        super().__init__(ctx, dist_info)
        if self.ppo:
            self.build_checkpointer()

    def bind_stage(self) -> None:
        assert isinstance(self.ctx.stage, PostTrainStagePlan) and self.ctx.stage.kind == "rlvr"
        self.stage = self.ctx.stage
        self.settings = RlvrSettings.from_hyperparameters(self.stage.hyperparameters)
        self.ppo = self.settings.algorithm == "ppo"
        if self.ppo:
            self.per_example_metrics = (*type(self).per_example_metrics, "value_loss")
        self.seq_len = self.stage.max_seq_len + self.settings.response_len

    def build_layout(self) -> None:
        group, batch, world = self.settings.samples_per_prompt, self.stage.batch_size, self.dist.world_size
        if batch % group:
            raise TrainingError(f"{self.stage.name}: batch_size {batch} episodes is not a whole number of prompts of "
                                f"samples_per_prompt {group}: use a multiple of {group}")
        self.prompts_per_step = batch // group
        if self.prompts_per_step < world:
            raise TrainingError(f"{self.stage.name}: {self.prompts_per_step} prompts a step for {world} processes: "
                                "raise batch_size or run on fewer processes")
        self.micro_batch, self.grad_accum = max(1, self.stage.parallel.micro_batch), 0
        most = -(-self.prompts_per_step // world) * group  # the largest share of a step's episodes
        self.micro_batches = -(-most // self.micro_batch)

    def layout_text(self) -> str:
        s = self.settings
        return (f"{s.algorithm.upper()}, {self.prompts_per_step} prompts x {s.samples_per_prompt} samples a step, "
                f"{s.update_epochs} update(s) of up to {self.micro_batch} episodes per micro-batch")

    @property
    def compute_dtype(self) -> torch.dtype:
        """What the policy computes in (bf16 under mixed precision on GPUs): the sampler and the reference too."""
        bf16 = self.dist.device.type == "cuda" and self.stage.parallel.mixed_precision == "bf16"
        return torch.bfloat16 if bf16 else torch.float32

    def build_model(self) -> None:
        super().build_model()
        with torch.device("meta"):
            self.sampler = Transformer(ModelArgs.from_plan(self.ctx.plan))
        self.sampler.to_empty(device=self.dist.device)
        self.sampler.init_rope()
        self.sampler.eval().requires_grad_(False)
        _compute_in(self.sampler, self.compute_dtype)
        if self.ppo:
            self.build_value_model()

    def build_value_model(self) -> None:
        """PPO's value model: sharded and trained as the policy is, with its own AdamW of the stage's settings."""
        par = self.stage.parallel
        with torch.device("meta"):
            self.value = ScalarModel(ModelArgs.from_plan(self.ctx.plan))
        mesh = build_mesh(self.dist.device.type, self.dist.world_size, par.shard_gpus)
        on_gpu = self.dist.device.type == "cuda"
        self.value_sharded = apply_parallelism(self.value, mesh, bf16=on_gpu and par.mixed_precision == "bf16",
                                               activation_checkpointing=par.activation_checkpointing,
                                               compile_blocks=False, fsdp_units=par.fsdp_units)
        self.value.to_empty(device=self.dist.device)
        with warnings.catch_warnings():  # DTensor random init on CPU meshes warns
            warnings.filterwarnings("ignore", message="DTensor random operators")
            self.value.init_weights()
        self.value_optimizer = build_optimizer(self.value, self.stage.optimizer)

    def build_checkpointer(self) -> None:
        """PPO: the value model's checkpoints beside the policy's (runtime/ppo_value.py)."""
        policy = self.ctx.plan.checkpoint
        self.value_checkpointer = Checkpointer(self.ctx.run_dir / VALUE_DIR, keep_last=policy.keep_last,
                                               permanent_every=policy.permanent_every, async_save=False,
                                               group=self.dist.checkpoint_group)
        self.checkpointer = PairedCheckpointer(self.checkpointer, self.value_checkpointer,  # type: ignore[assignment]
                                               self.value, self.value_optimizer)

    def build_loader(self) -> None:
        plan, s = self.ctx.plan, self.settings
        try:
            require(s.verifiers)
            self.scorers = {name: scorer(name) for name in s.verifiers}
        except VerifierError as exc:
            raise TrainingError(f"{self.stage.name}: {exc}", ExitCode.NOT_RUNNABLE) from None
        self.dataset, self.prompts = self.read_dataset(prompt_reader(s.verifiers), "prompts")
        limit = self.stage.max_seq_len
        cut = sum(len(p.ids) > limit for p in self.prompts)
        if cut:
            self.say(f"warning: {cut:,} of {len(self.prompts):,} prompts of {self.dataset} are longer than "
                     f"max_seq_len {limit}; their last {limit} tokens are kept")
            self.prompts = [attrs.evolve(p, ids=p.ids[-limit:]) for p in self.prompts]
        self.tokenizer = load_tokenizer(plan.tokenizer.name)
        self.banned = banned_ids(plan.tokenizer.embedding_rows, self.tokenizer.vocab_size, plan.tokenizer.pad_id,
                                 self.dist.device)
        self._orders: dict[int, np.ndarray] = {}

    # -- starting point ----------------------------------------------------------------------
    def restore(self) -> bool:
        own = latest_complete(self.ctx.run_dir)
        if own is None or not read_marker(own).get("final"):  # a finished run needs no reference
            start = self.from_step()
            try:
                self.reference = load_model(self.ctx.plan, start, self.dist.device).requires_grad_(False)
                _compute_in(self.reference, self.compute_dtype)
            except EvalError as exc:
                raise TrainingError(f"{self.stage.name}: the reference model: {exc}", ExitCode.CHECKPOINT) from None
            self.say(f"reference model: {start}")
        return super().restore()

    def start(self) -> None:
        """From the `from` stage's final model weights; the optimizer starts afresh."""
        path = self.from_step()
        self.checkpointer.load(path, self.model, None)
        self.say(f"starting {self.ctx.run} from {path} (model weights)")
        if self.ppo:
            reward = self.settings.value_from
            try:
                reward_path = final_step(self.ctx.checkpoint_root / reward) if reward else None
            except CheckpointError as exc:
                raise TrainingError(f"{self.stage.name}'s value model starts from {reward}: {exc}",
                                    ExitCode.CHECKPOINT) from None
            source = start_value_model(self.value_checkpointer, self.value, reward_path, path)
            self.say(f"value model: from {source}")

    # -- a step ------------------------------------------------------------------------------
    def tokens_before(self, step: int) -> int:
        return step * self.stage.batch_size * self.seq_len

    def step_prompts(self) -> list[tuple[int, Prompt]]:
        """This rank's prompts of the current step, each with its index among the step's prompts."""
        n, per_step = len(self.prompts), self.prompts_per_step
        mine = []
        for p in range(self.dist.rank, per_step, self.dist.world_size):
            i = self.step * per_step + p
            epoch = i // n
            if epoch not in self._orders:
                self._orders = {epoch: np.random.default_rng((self.stage.seed, epoch)).permutation(n)}
            mine.append((p, self.prompts[int(self._orders[epoch][i % n])]))
        return mine

    def sync_sampler(self) -> None:
        """Copy the policy's weights (gathered from their shards) into the sampler."""
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))
        self.sampler.load_state_dict(full)

    def rollout(self) -> Rollout:
        s, plan, device = self.settings, self.ctx.plan, self.dist.device
        group = s.samples_per_prompt
        mine = self.step_prompts()
        prompts = [prompt for _, prompt in mine for _ in range(group)]
        rows = [p * group + g for p, _ in mine for g in range(group)]
        self.sync_sampler()
        out = sample(self.sampler, [p.ids for p in prompts], max_new_tokens=s.response_len,
                     eos_id=self.tokenizer.eos_id, pad_id=plan.tokenizer.pad_id, temperature=s.temperature,
                     banned=self.banned, generator=sampling_generator(self.stage.seed, self.step, device),
                     rows=rows, global_rows=self.stage.batch_size)
        verified = []
        for prompt, ids, mask, eos in zip(prompts, out.responses.tolist(), out.mask.tolist(), out.eos.tolist(),
                                          strict=True):
            text = self.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m][:-1 if eos else None])
            try:
                score = self.scorers[prompt.verifier](text, prompt.ground_truth)
            except GroundTruthError as exc:
                raise TrainingError(f"{self.dataset}: a prompt's ground truth {prompt.ground_truth!r}: {exc}",
                                    ExitCode.DATA) from None
            verified.append(s.verifier_reward * score)
        verified_t = torch.tensor(verified, dtype=torch.float32, device=device)
        rewards = torch.where(out.eos, verified_t, torch.full_like(verified_t, s.no_eos_penalty))
        # the padding after a response: an id the model may emit (the pad id's log-prob is -inf, and a
        # NaN there would reach the gradients through exp even under a mask of 0)
        responses = out.responses.masked_fill(~out.mask, self.tokenizer.eos_id)
        tokens, starts = episode_inputs([p.ids for p in prompts], responses, plan.tokenizer.pad_id)
        real = sum(len(p.ids) for p in prompts) + int(out.mask.sum())
        return Rollout(tokens=tokens, starts=starts, real_tokens=real,
                       responses=responses, mask=out.mask.float(), eos=out.eos, rewards=rewards,
                       verified=verified_t)

    def micro_slices(self, rows: int) -> list[slice]:
        """As many micro-batches on every rank; one past this rank's rows is empty (slice(0, 0))."""
        mb = self.micro_batch
        return [slice(i * mb, min(rows, (i + 1) * mb)) if i * mb < rows else slice(0, 0)
                for i in range(self.micro_batches)]

    def logps(self, model: torch.nn.Module, r: Rollout, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        logits = response_logits(model, r.tokens[rows], r.starts[rows], r.responses.shape[1])
        return token_logps(logits, r.responses[rows], self.settings.temperature, self.banned, in_place=True)

    @torch.no_grad()
    def reference_logps(self, r: Rollout) -> torch.Tensor:
        mb = self.micro_batch
        return torch.cat([self.logps(self.reference, r, slice(i, i + mb))[0]
                          for i in range(0, len(r.tokens), mb)])

    def global_sum(self, value: torch.Tensor) -> torch.Tensor:
        if dist.is_initialized() and self.dist.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def global_whiten(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """masked_whiten over the rollout's tokens on every rank (PPO's advantages), the same on each."""
        count = float(self.global_sum(mask.sum().double()))
        mean = float(self.global_sum(masked_sum(x, mask).double())) / max(count, 1.0)
        square = float(self.global_sum(masked_sum((x - mean) ** 2, mask).double()))
        var = square / (count - 1) if count > 1 else 0.0
        scale = 1.0 / math.sqrt(var + 1e-8)
        return (x - mean) * scale * mask

    def value_of(self, r: Rollout, rows: slice) -> torch.Tensor:
        """(b, R): the value model's estimate at the state before each response token."""
        with warnings.catch_warnings():  # FSDP on the scalar model's squeezed output: we slice it, never in place
            warnings.filterwarnings("ignore", message=".*returned a view tensor")
            values: torch.Tensor = self.value(r.tokens[rows])
        ahead: torch.Tensor = values.gather(1, response_slots(r.starts[rows], r.responses.shape[1]))
        return ahead

    @torch.no_grad()
    def rollout_forwards(self, r: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PPO: the policy's log-probs and entropies and the value model's values at the rollout, no grad."""
        B = len(r.tokens)
        logps, entropy, values = (torch.zeros_like(r.mask) for _ in range(3))
        for rows in self.micro_slices(B):
            real = rows.stop > rows.start
            run = rows if real else slice(0, 1)  # every rank runs as many forwards (FSDP's collectives)
            lp, ent = self.logps(self.model, r, run)
            v = self.value_of(r, run)
            if real:
                logps[rows], entropy[rows], values[rows] = lp, ent, v
        return logps, entropy, values

    def train_step(self, buffers: StepBuffers, index: int) -> float:
        started = time.perf_counter()
        s, world = self.settings, self.dist.world_size
        lr = apply_lr(self.optimizer, self.stage.lr, self.step)
        if self.ppo:
            apply_lr(self.value_optimizer, self.stage.lr, self.step)
        r = self.rollout()
        B = len(r.tokens)
        reference = self.reference_logps(r)
        tokens = r.mask.sum()
        all_tokens = float(self.global_sum(tokens.double()).clamp(min=1))
        kl_sum = torch.zeros(B, dtype=torch.float64, device=r.mask.device)
        entropy_sum = torch.zeros_like(kl_sum)
        if self.ppo:  # KL a per-token reward penalty, the verifier's reward at the last token; GAE; whitened
            old, entropy, old_values = self.rollout_forwards(r)
            kl = kl_per_token(old, reference, s.kl_estimator)
            rewards = ppo_rewards(kl, r.rewards, r.mask, s.kl_beta)
            advantages, returns = gae(rewards, old_values, r.mask, s.gamma, s.gae_lambda)
            advantages = self.global_whiten(advantages, r.mask)
            kl_sum = masked_sum(kl, r.mask, dim=1).double()
            entropy_sum = masked_sum(entropy, r.mask, dim=1).double()
        else:  # GRPO: group-normalised rewards, whole groups on each rank; old log-probs from the first update
            old = torch.zeros_like(r.mask)
            advantages = grpo_advantages(r.rewards, s.samples_per_prompt).unsqueeze(1)
        loss_sum = torch.zeros((), dtype=torch.float64, device=r.mask.device)
        value_loss_sum = torch.zeros_like(loss_sum)
        norms = []
        slices = self.micro_slices(B)
        for epoch in range(s.update_epochs):
            for i, rows in enumerate(slices):
                last = i == len(slices) - 1
                self.sharded.set_requires_gradient_sync(last)
                real = rows.stop > rows.start
                rows = rows if real else slice(0, 1)  # a row of weight 0: the collectives need this rank
                logps, entropy = self.logps(self.model, r, rows)
                mask = r.mask[rows] * float(real)
                if epoch == 0 and not self.ppo:  # the policy of the rollout: the ratio's denominator, logged KL
                    old[rows] = logps.detach()
                policy_loss, _ = clipped_policy_loss(logps, old[rows], advantages[rows], s.clip_eps)
                if self.ppo:
                    per_token = policy_loss
                else:
                    kl = kl_per_token(logps, reference[rows], s.kl_estimator)
                    per_token = policy_loss + s.kl_beta * kl
                    if epoch == 0 and real:
                        kl_sum[rows] = masked_sum(kl.detach(), mask, dim=1).double()
                        entropy_sum[rows] = masked_sum(entropy, mask, dim=1).double()
                loss = masked_sum(per_token, mask) / all_tokens
                # the ranks' losses add up to the rollout's; FSDP averages gradients over ranks, so scale back up
                torch.autograd.backward(loss * world)
                loss_sum += loss.detach().double() * all_tokens / s.update_epochs
                if self.ppo:
                    self.value_sharded.set_requires_gradient_sync(last)
                    value_loss, _ = clipped_value_loss(self.value_of(r, rows), old_values[rows], returns[rows],
                                                       s.clip_eps)
                    value_loss = masked_sum(value_loss, mask) / all_tokens
                    torch.autograd.backward(value_loss * s.value_coef * world)
                    value_loss_sum += value_loss.detach().double() * self.stage.batch_size / s.update_epochs
            norms.append(self.optimizer_step())
            if self.ppo:
                self.value_optimizer_step()
        lengths = r.mask.sum(dim=1).double()
        seconds = time.perf_counter() - started
        extra = {"value_loss": value_loss_sum} if self.ppo else {}
        buffers.put(index, ce_sum=loss_sum, z_sum=0.0, tokens=tokens.double(),
                    instances=r.real_tokens / self.seq_len, masked=0.0,
                    grad_norm=torch.stack(norms).mean(), examples=float(B),
                    reward=r.rewards.double().sum(), verifier_reward=r.verified.double().sum(),
                    kl=kl_sum.sum(), response_length=lengths.sum(),
                    entropy=(entropy_sum / lengths.clamp(min=1)).sum(), eos_rate=r.eos.double().sum(),
                    episodes_per_s=B * self.stage.batch_size / max(seconds, 1e-9), **extra)
        self.step += 1
        return lr

    def value_optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.value.parameters(), self.stage.optimizer.grad_clip, foreach=True)
        self.value_optimizer.step()
        self.value_optimizer.zero_grad(set_to_none=True)


def _compute_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Parameters in `dtype`; buffers (RoPE tables) stay fp32, as FSDP's mixed precision leaves them."""
    if dtype != torch.float32:
        for param in model.parameters():
            param.data = param.data.to(dtype)


def run_rlvr_stage(ctx: RunContext) -> int:
    """The runner of rlvr stages (named in olmo2spec/kinds.py's table)."""
    return run_with(RlvrTrainer, ctx)

