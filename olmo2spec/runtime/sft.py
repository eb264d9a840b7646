"""The `sft` stage: supervised finetuning on chat data, the pretraining trainer with other batches.

What differs from pretraining, and only that, is here: the batches (olmo2spec/data/sft_batches.py:
conversations in the Tulu chat format, packed without padding, attention kept inside each
conversation, loss on assistant tokens only, `sum` or `mean` as the recipe says), the start (the
`from` stage's final model weights, a fresh optimizer) and the step. The loop, checkpoints, resume,
metrics, the non-finite stop and the exit codes are the Trainer's.
"""

from __future__ import annotations

import torch

from olmo2spec.data.chat import read_chat_file
from olmo2spec.data.sft_batches import SftBatches
from olmo2spec.plan.plan import PostTrainStagePlan
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.runtime.loss import weighted_ce
from olmo2spec.runtime.metrics import StepBuffers
from olmo2spec.runtime.optim import apply_lr
from olmo2spec.runtime.trainer import Trainer, run_with

__all__ = ["SftTrainer", "run_sft_stage"]


class SftTrainer(Trainer):
    # narrower than the Trainer's TrainStagePlan: the base methods reading fields only that has are overridden
    stage: PostTrainStagePlan  # type: ignore[assignment]
    batches: SftBatches

    def bind_stage(self) -> None:
        assert isinstance(self.ctx.stage, PostTrainStagePlan) and self.ctx.stage.kind == "sft"
        self.stage = self.ctx.stage
        self.seq_len = self.stage.max_seq_len

    def build_layout(self) -> None:
        # rows of packed conversations per forward; how many forwards a step takes depends on its data
        self.micro_batch, self.grad_accum = max(1, self.stage.parallel.micro_batch), 0

    def layout_text(self) -> str:
        return f"packed rows of {self.seq_len} tokens, up to {self.micro_batch} per micro-batch"

    def build_loader(self) -> None:
        plan, stage = self.ctx.plan, self.stage
        path, examples = self.read_dataset(read_chat_file, "conversations")
        self.batches = SftBatches(examples, batch_size=stage.batch_size, epochs=stage.epochs,
                                  seq_len=self.seq_len, seed=stage.seed, loss=str(stage.hyperparameters["loss"]),
                                  pad_id=plan.tokenizer.pad_id, micro_rows=self.micro_batch,
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        assert self.batches.steps == stage.steps, (self.batches.steps, stage.steps)  # one formula, in the plan
        if self.batches.cut:
            self.say(f"warning: {self.batches.cut:,} of {len(examples):,} conversations of {path} are longer than "
                     f"max_seq_len {self.seq_len} and are cut to it")

    def start(self) -> None:
        """From the `from` stage's final model weights; the optimizer starts afresh."""
        path = self.from_step()
        self.checkpointer.load(path, self.model, None)
        self.say(f"starting {self.ctx.run} from {path} (model weights)")

    def tokens_before(self, step: int) -> int:
        return self.batches.tokens_before(step)

    def train_step(self, buffers: StepBuffers, index: int) -> float:
        lr = apply_lr(self.optimizer, self.stage.lr, self.step)
        batch = self.batches.batch(self.step)
        device = self.dist.device
        tokens, labels, positions, doc_ids, weights = (
            torch.from_numpy(a).to(device, non_blocking=True)
            for a in (batch.tokens, batch.labels, batch.positions, batch.doc_ids, batch.weights))
        loss_sum = torch.zeros((), device=device)
        world = self.dist.world_size
        for i, rows in enumerate(batch.micro_batches):
            self.sharded.set_requires_gradient_sync(i == len(batch.micro_batches) - 1)
            logits = self.model(tokens[rows], positions=positions[rows], doc_ids=doc_ids[rows])
            loss = weighted_ce(logits, labels[rows], weights[rows])
            # the ranks' losses add up to the batch's; FSDP averages gradients over ranks, so scale back up
            torch.autograd.backward(loss * world)
            loss_sum += loss.detach()
        norm = self.optimizer_step()
        # metrics divide the ranks' summed ce_sum by their summed tokens: this makes that the batch's loss
        trained = batch.global_trained or 1
        mine = batch.trained_tokens if batch.global_trained else 1 / world
        buffers.put(index, ce_sum=loss_sum * trained, z_sum=0.0, tokens=float(mine),
                    instances=batch.tokens_packed / self.seq_len, masked=0.0, grad_norm=norm)
        self.step += 1
        return lr


def run_sft_stage(ctx: RunContext) -> int:
    """The runner of sft stages (named in olmo2spec/kinds.py's table)."""
    return run_with(SftTrainer, ctx)
