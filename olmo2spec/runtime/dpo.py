"""The `dpo` stage: preference tuning with (length-normalised) DPO, the pretraining trainer with another step.

What differs from pretraining, and only that, is here: the batches (olmo2spec/data/preferences.py:
a pair's chosen and rejected sequences in the same micro-batch), the reference model's log-probs
(computed once from the `from` checkpoint before training, cached in the run directory:
runtime/dpo_reference.py), the start (the `from` stage's final model weights, a fresh optimizer) and
the step (runtime/dpo_loss.py). The loop, checkpoints, resume, metrics, the non-finite stop and the
exit codes are the Trainer's; metrics.jsonl gains each step's mean chosen and rejected rewards, their
margin and the preference accuracy (the share of pairs whose chosen reward is the higher).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

from olmo2spec.plan.plan import PostTrainStagePlan
from olmo2spec.runtime.bundle import RunContext
from olmo2spec.runtime.checkpoint import latest_complete, read_marker
from olmo2spec.runtime.dpo_loss import dpo_losses, response_logps
from olmo2spec.runtime.dpo_reference import load_reference, reference_key, save_reference
from olmo2spec.runtime.metrics import StepBuffers
from olmo2spec.runtime.optim import apply_lr
from olmo2spec.runtime.pair_trainer import PairTrainer
from olmo2spec.runtime.trainer import run_with

__all__ = ["DpoTrainer", "run_dpo_stage"]


class DpoTrainer(PairTrainer):
    reference: np.ndarray
    """(pairs, 2): the reference model's log-probs of each pair's chosen and rejected response."""
    per_example_metrics = ("chosen_reward", "rejected_reward", "margin", "accuracy")

    def bind_stage(self) -> None:
        assert isinstance(self.ctx.stage, PostTrainStagePlan) and self.ctx.stage.kind == "dpo"
        self.stage = self.ctx.stage
        self.seq_len = self.stage.max_seq_len
        beta = self.stage.hyperparameters["beta"]
        assert isinstance(beta, (int, float)), beta  # the spec's validator: a positive number
        self.beta = float(beta)
        self.loss = str(self.stage.hyperparameters["loss"])

    def layout_text(self) -> str:
        return f"{self.micro_batch} pair(s) (chosen and rejected rows) per micro-batch, {self.loss}, beta {self.beta:g}"

    # -- starting point ----------------------------------------------------------------------
    def restore(self) -> bool:
        own = latest_complete(self.ctx.run_dir)
        if own is None or not read_marker(own).get("final"):  # a finished run needs no reference
            self.prepare_reference()
        return super().restore()

    def start(self) -> None:
        """From the `from` stage's final model weights; the optimizer starts afresh."""
        path = self.from_step()
        self.checkpointer.load(path, self.model, None)
        self.say(f"starting {self.ctx.run} from {path} (model weights)")

    def prepare_reference(self) -> None:
        """The reference log-probs: from the run directory's cache, else computed from the `from` checkpoint."""
        start = self.from_step()
        key = reference_key(start=start, dataset=self.dataset, examples=self.stage.examples, loss=self.loss,
                            max_seq_len=self.seq_len, tokenizer=self.ctx.plan.tokenizer.name, template="tulu")
        pairs = len(self.batches.sequences)
        cached = load_reference(self.ctx.run_dir, key, pairs)
        if cached is not None:
            self.reference, path = cached
            self.say(f"reusing the reference log-probs of {pairs:,} pairs from {path}")
            return
        self.say(f"computing the reference log-probs of {pairs:,} pairs from {start}")
        self.checkpointer.load(start, self.model, None)
        self.reference = self.reference_logps()
        if self.dist.main:
            save_reference(self.ctx.run_dir, key, self.reference)
        if dist.is_initialized():
            dist.barrier()

    def _reference_chunks(self) -> Iterator[list[int]]:
        """This rank's share of all pairs, micro-batch by micro-batch; as many chunks on every rank."""
        pairs, size, world = len(self.batches.sequences), self.micro_batch, self.dist.world_size
        chunks = [list(range(i, min(i + size, pairs))) for i in range(0, pairs, size)]
        per_rank = -(-len(chunks) // world)
        mine = chunks[self.dist.rank::world]
        yield from mine
        for _ in range(per_rank - len(mine)):
            yield [-1]  # a pair of padding: the collectives of a forward need every rank

    @torch.no_grad()
    def reference_logps(self) -> np.ndarray:
        out = torch.zeros((len(self.batches.sequences), 2), dtype=torch.float64, device=self.dist.device)
        for chunk in self._reference_chunks():
            tokens, labels = (torch.from_numpy(a).to(self.dist.device) for a in self.batches.rows(chunk))
            logps = response_logps(self.model(tokens), labels, self.loss).view(-1, 2).double()
            real = [k for k, i in enumerate(chunk) if i >= 0]
            if real:
                out[[chunk[k] for k in real]] = logps[real]
        if dist.is_initialized() and self.dist.world_size > 1:
            dist.all_reduce(out)  # each pair was computed by one rank, zeros elsewhere
        return out.cpu().numpy()

    # -- the loop ----------------------------------------------------------------------------
    def tokens_before(self, step: int) -> int:
        return self.batches.tokens_before(step)

    def train_step(self, buffers: StepBuffers, index: int) -> float:
        lr = apply_lr(self.optimizer, self.stage.lr, self.step)
        batch = self.batches.batch(self.step)
        device, world = self.dist.device, self.dist.world_size
        sums = {name: torch.zeros((), dtype=torch.float64, device=device)
                for name in ("loss", *self.per_example_metrics)}
        for i, (tokens_np, labels_np, pairs_np) in enumerate(batch.micro_batches):
            self.sharded.set_requires_gradient_sync(i == len(batch.micro_batches) - 1)
            tokens, labels = (torch.from_numpy(a).to(device, non_blocking=True) for a in (tokens_np, labels_np))
            real = torch.from_numpy(pairs_np >= 0).to(device)
            reference = torch.from_numpy(self.reference[np.maximum(pairs_np, 0)]).to(device)
            policy = response_logps(self.model(tokens), labels, self.loss).view(-1, 2)
            losses, chosen, rejected = dpo_losses(policy[:, 0], policy[:, 1], reference[:, 0].float(),
                                                  reference[:, 1].float(), self.beta)
            weight = real.float() / batch.global_pairs  # the step's loss is the mean over all its pairs
            # the ranks' losses add up to the batch's; FSDP averages gradients over ranks, so scale back up
            torch.autograd.backward((losses * weight).sum() * world)
            mask = real.double()
            sums["loss"] += (losses.detach().double() * mask).sum()
            sums["chosen_reward"] += (chosen.double() * mask).sum()
            sums["rejected_reward"] += (rejected.double() * mask).sum()
            sums["margin"] += ((chosen - rejected).double() * mask).sum()
            sums["accuracy"] += ((chosen > rejected).double() * mask).sum()
        norm = self.optimizer_step()
        # metrics divide the ranks' summed ce_sum by their summed `tokens`: here pairs, so the loss is the mean
        buffers.put(index, ce_sum=sums.pop("loss"), z_sum=0.0, tokens=float(batch.pairs),
                    instances=batch.tokens / self.seq_len, masked=0.0, grad_norm=norm,
                    examples=float(batch.pairs), **sums)
        self.step += 1
        return lr


def run_dpo_stage(ctx: RunContext) -> int:
    """The runner of dpo stages (named in olmo2spec/kinds.py's table)."""
    return run_with(DpoTrainer, ctx)
