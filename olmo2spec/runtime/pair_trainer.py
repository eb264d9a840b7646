"""What the trainers of preference pairs (dpo, reward) share: a pair's two sequences in one micro-batch."""

from __future__ import annotations

from olmo2spec.data.preferences import PreferenceBatches, read_preference_file
from olmo2spec.plan.plan import PostTrainStagePlan
from olmo2spec.runtime.trainer import Trainer

__all__ = ["PairTrainer"]


class PairTrainer(Trainer):
    """A Trainer whose steps are preference pairs: chosen and rejected rows of the same micro-batch."""

    # narrower than the Trainer's TrainStagePlan: the base methods reading fields only that has are overridden
    stage: PostTrainStagePlan  # type: ignore[assignment]
    batches: PreferenceBatches
    cut_note = "it is cut to it"
    """The end of the warning for pairs longer than max_seq_len: what the subclass does with such a side."""

    def build_layout(self) -> None:
        # micro_batch counts sequences; a pair is two of them, in the same forward
        self.micro_batch, self.grad_accum = max(1, self.stage.parallel.micro_batch // 2), 0

    def build_loader(self) -> None:
        plan, stage = self.ctx.plan, self.stage
        self.dataset, pairs = self.read_dataset(read_preference_file, "preference pairs")
        self.batches = PreferenceBatches(pairs, batch_size=stage.batch_size, epochs=stage.epochs,
                                         seq_len=self.seq_len, seed=stage.seed, pad_id=plan.tokenizer.pad_id,
                                         micro_pairs=self.micro_batch, rank=self.dist.rank,
                                         world_size=self.dist.world_size)
        assert self.batches.steps == stage.steps, (self.batches.steps, stage.steps)  # one formula, in the plan
        if self.batches.cut:
            self.say(f"warning: {self.batches.cut:,} of {len(pairs):,} pairs of {self.dataset} have a side longer "
                     f"than max_seq_len {self.seq_len}; {self.cut_note}")
