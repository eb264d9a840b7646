"""The `reward` stage: a reward model on preference pairs, the scalar model PPO's value function starts from.

As open-instruct's reward modeling (Tulu 3, OLMo 2 Table 26): the `from` checkpoint's trunk with a
fresh `score` head (runtime/scalar_model.py), each side of a pair scored at its last real token (the
eos that ends the response), and the Bradley-Terry loss -logsigmoid(r_chosen - r_rejected), averaged
over the step's pairs. The batches are DPO's (data/preferences.py: a pair's chosen and rejected rows
in the same micro-batch, right-padded, so padding never changes a real token's score). The loop,
checkpoints, resume, metrics, the non-finite stop and the exit codes are the Trainer's; metrics.jsonl
gains each step's preference accuracy, mean chosen and rejected scores and their margin.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from olmo2spec.plan.plan import PostTrainStagePlan
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.runtime.metrics import StepBuffers
from olmo2spec.runtime.optim import apply_lr
from olmo2spec.runtime.pair_trainer import PairTrainer
from olmo2spec.runtime.scalar_model import ScalarModel, last_token_scores, load_scalar_model
from olmo2spec.runtime.trainer import run_with

__all__ = ["RewardTrainer", "run_reward_stage", "bradley_terry_losses"]


def bradley_terry_losses(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per pair: -log sigmoid(r_chosen - r_rejected), the negative log-likelihood that chosen is preferred."""
    return -F.logsigmoid(chosen - rejected)


class RewardTrainer(PairTrainer):
    model: ScalarModel  # narrower than the Trainer's Transformer
    model_class = ScalarModel
    per_example_metrics = ("accuracy", "chosen_score", "rejected_score", "margin")
    cut_note = "it is cut to it and scored at its last kept token"

    def bind_stage(self) -> None:
        assert isinstance(self.ctx.stage, PostTrainStagePlan) and self.ctx.stage.kind == "reward"
        self.stage = self.ctx.stage
        self.seq_len = self.stage.max_seq_len

    def layout_text(self) -> str:
        return f"{self.micro_batch} pair(s) (chosen and rejected rows) per micro-batch, Bradley-Terry loss"

    def build_loader(self) -> None:
        super().build_loader()
        # a side's score is read at its last token: one cut to max_seq_len is scored mid-response
        self.lengths = np.array([[len(c[0]), len(r[0])] for c, r in self.batches.sequences], dtype=np.int64)

    def start(self) -> None:
        """From the `from` stage's final model: its trunk, and a fresh score head (a policy has none)."""
        path = self.from_step()
        marker = load_scalar_model(self.checkpointer, path, self.model)
        head = "its score head" if marker["score_loaded"] else "a fresh score head"
        self.say(f"starting {self.ctx.run} from {path} (model weights, {head})")

    def tokens_before(self, step: int) -> int:
        return self.batches.tokens_before(step)

    def train_step(self, buffers: StepBuffers, index: int) -> float:
        lr = apply_lr(self.optimizer, self.stage.lr, self.step)
        batch = self.batches.batch(self.step)
        device, world = self.dist.device, self.dist.world_size
        sums = {name: torch.zeros((), dtype=torch.float64, device=device)
                for name in ("loss", *self.per_example_metrics)}
        for i, (tokens_np, _labels, pairs_np) in enumerate(batch.micro_batches):
            self.sharded.set_requires_gradient_sync(i == len(batch.micro_batches) - 1)
            tokens = torch.from_numpy(tokens_np).to(device, non_blocking=True)
            # rows chosen, rejected, chosen, ...: each row's real length (a pair of padding: 1 token)
            lengths = np.where(pairs_np[:, None] >= 0, self.lengths[np.maximum(pairs_np, 0)], 1).reshape(-1)
            scores = last_token_scores(self.model(tokens), torch.from_numpy(lengths).to(device)).view(-1, 2)
            chosen, rejected = scores[:, 0], scores[:, 1]
            losses = bradley_terry_losses(chosen, rejected)
            real = torch.from_numpy(pairs_np >= 0).to(device)
            weight = real.float() / batch.global_pairs  # the step's loss is the mean over all its pairs
            # the ranks' losses add up to the batch's; FSDP averages gradients over ranks, so scale back up
            torch.autograd.backward((losses * weight).sum() * world)
            mask = real.double()
            chosen, rejected = chosen.detach().double(), rejected.detach().double()
            sums["loss"] += (losses.detach().double() * mask).sum()
            sums["accuracy"] += ((chosen > rejected).double() * mask).sum()
            sums["chosen_score"] += (chosen * mask).sum()
            sums["rejected_score"] += (rejected * mask).sum()
            sums["margin"] += ((chosen - rejected) * mask).sum()
        norm = self.optimizer_step()
        # metrics divide the ranks' summed ce_sum by their summed `tokens`: here pairs, so the loss is the mean
        buffers.put(index, ce_sum=sums.pop("loss"), z_sum=0.0, tokens=float(batch.pairs),
                    instances=batch.tokens / self.seq_len, masked=0.0, grad_norm=norm,
                    examples=float(batch.pairs), **sums)
        self.step += 1
        return lr


def run_reward_stage(ctx: RunContext) -> int:
    """The runner of reward stages (named in olmo2spec/kinds.py's table)."""
    return run_with(RewardTrainer, ctx)

