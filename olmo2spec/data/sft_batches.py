"""SFT batches: conversations in a seeded order over epochs, packed without padding, with loss weights.

Step s trains on conversations [s * batch_size, (s + 1) * batch_size) of the run's order (each epoch
a permutation of the dataset seeded by (seed, epoch); the last step may be short). Rank r takes every
world_size-th of them and packs them, in order, into rows of `seq_len` tokens: a conversation goes
into the current row if it fits, else starts a new one (one longer than `seq_len` is cut, as
open-instruct truncates). Each token carries its conversation's id (`doc_ids`) and its position in
it, so that attention stays inside a conversation. Its rows go through the model `micro_rows` at a
time; every rank runs as many micro-batches as the rank with the most rows (FSDP's collectives need
the same count), one with no rows left gets a row of padding. Only the rows' ends are padding.

The loss is a weighted sum of the next-token cross-entropies of the trained (assistant) tokens, the
weights fixed by the whole global batch, so the loss does not depend on how conversations fall into
rows, micro-batches or ranks:
- "sum": every trained token of the batch weighs the same, 1 / (the batch's trained tokens)
  (open-instruct's `reduce_loss = "sum"`, Table 17's better choice; divided by the token count so
  that the learning rate and gradient clipping keep their scale);
- "mean": each conversation's mean token loss, averaged over the batch's conversations (what a
  per-example mean gives, as with one conversation per micro-batch).
Everything is a function of the step, so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from olmo2spec.data.chat import ChatExample

__all__ = ["IGNORE", "LOSSES", "PackedBatch", "SftBatches", "next_token_labels"]

IGNORE = -100
LOSSES = ("sum", "mean")


@attrs.frozen
class PackedBatch:
    """One rank's rows of one step, and the slices of them each forward/backward takes."""

    tokens: np.ndarray
    """(R, T) int64."""
    labels: np.ndarray
    """(R, T) int64: the next token where it is a trained one, else IGNORE."""
    positions: np.ndarray
    """(R, T) int64: each token's position in its conversation."""
    doc_ids: np.ndarray
    """(R, T) int64: which conversation a token is of (-1: padding)."""
    weights: np.ndarray
    """(R, T) float32: each label's weight in the step's loss (0 where IGNORE)."""
    micro_batches: list[slice]
    """Row slices, one per forward/backward; as many on every rank."""
    trained_tokens: int
    """Labels of this rank's rows."""
    global_trained: int
    """Labels of the whole step, every rank's."""
    tokens_packed: int
    """Tokens of this rank's conversations (padding not counted)."""


def next_token_labels(example: ChatExample, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of a conversation cut to `seq_len`: position t's label is token t+1 when that is trained."""
    ids = example.ids[:seq_len]
    labels = np.full(len(ids), IGNORE, dtype=np.int64)
    trained = example.trained[1:len(ids)]
    labels[:-1] = np.where(trained, ids[1:], IGNORE)
    return ids, labels


class SftBatches:
    """The batches of one SFT run (every rank builds the same object and takes its own rows)."""

    def __init__(self, examples: Sequence[ChatExample], *, batch_size: int, epochs: int, seq_len: int, seed: int,
                 loss: str, pad_id: int, micro_rows: int, rank: int = 0, world_size: int = 1) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r}: not one of {', '.join(LOSSES)}")
        self.batch_size, self.epochs, self.seq_len, self.seed, self.loss = batch_size, epochs, seq_len, seed, loss
        self.pad_id, self.micro_rows, self.rank, self.world_size = pad_id, micro_rows, rank, world_size
        self.examples = [next_token_labels(e, seq_len) for e in examples]
        self.lengths = np.array([len(ids) for ids, _ in self.examples], dtype=np.int64)
        self.trained = np.array([int((labels != IGNORE).sum()) for _, labels in self.examples], dtype=np.int64)
        self.cut = sum(len(e.ids) > seq_len for e in examples)
        """Conversations longer than seq_len, cut."""
        n = len(examples)
        self.order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(n) for epoch in range(epochs)])
        self.steps = math.ceil(len(self.order) / batch_size)

    def step_examples(self, step: int) -> np.ndarray:
        """Indices of the conversations of step `step` (0-based), in order."""
        return self.order[step * self.batch_size:(step + 1) * self.batch_size]

    def tokens_before(self, step: int) -> int:
        """Conversation tokens of the steps before `step`, over all ranks."""
        return int(self.lengths[self.order[:step * self.batch_size]].sum())

    def _rows(self, chosen: np.ndarray, slots: list[int]) -> list[list[int]]:
        """Greedy packing of the batch's slots (indices into `chosen`) into rows of seq_len tokens, in order."""
        rows: list[list[int]] = []
        room = 0
        for j in slots:
            length = int(self.lengths[chosen[j]])
            if length > room:
                rows.append([])
                room = self.seq_len
            rows[-1].append(j)
            room -= length
        return rows

    def _weights(self, chosen: np.ndarray) -> np.ndarray:
        """The weight of each trained token of each of the batch's conversations (by slot)."""
        counts = self.trained[chosen].astype(np.float64)
        if self.loss == "sum":
            total = counts.sum()
            return np.full(len(chosen), 1.0 / total if total else 0.0)
        answered = int((counts > 0).sum())
        weights: np.ndarray = np.divide(1.0, counts * answered, out=np.zeros(len(chosen)), where=counts > 0)
        return weights

    def batch(self, step: int) -> PackedBatch:
        chosen = self.step_examples(step)
        weight = self._weights(chosen)
        # a slot, not a conversation, is a document: a step across epochs may hold a conversation twice
        slots = list(range(len(chosen)))
        per_rank = [self._rows(chosen, slots[r::self.world_size]) for r in range(self.world_size)]
        most = max(len(rows) for rows in per_rank)
        count, mine_rows = max(1, math.ceil(most / self.micro_rows)), len(per_rank[self.rank])
        micro = [slice(i * self.micro_rows, min((i + 1) * self.micro_rows, mine_rows)) for i in range(count)]
        for i, part in enumerate(micro):
            if part.start >= part.stop:  # nothing left for this rank: one row of padding of its own
                micro[i] = slice(mine_rows, mine_rows + 1)
                mine_rows += 1
        shape = (mine_rows, self.seq_len)
        tokens = np.full(shape, self.pad_id, dtype=np.int64)
        labels = np.full(shape, IGNORE, dtype=np.int64)
        positions = np.zeros(shape, dtype=np.int64)
        doc_ids = np.full(shape, -1, dtype=np.int64)
        weights = np.zeros(shape, dtype=np.float32)
        for r, row in enumerate(per_rank[self.rank]):
            at = 0
            for j in row:
                ids, lab = self.examples[chosen[j]]
                span = slice(at, at + len(ids))
                tokens[r, span], labels[r, span] = ids, lab
                positions[r, span] = np.arange(len(ids))
                doc_ids[r, span] = j
                weights[r, span] = np.where(lab != IGNORE, weight[j], 0.0)
                at += len(ids)
        mine = chosen[self.rank::self.world_size]
        return PackedBatch(tokens=tokens, labels=labels, positions=positions, doc_ids=doc_ids, weights=weights,
                           micro_batches=micro, trained_tokens=int(self.trained[mine].sum()),
                           global_trained=int(self.trained[chosen].sum()),
                           tokens_packed=int(self.lengths[mine].sum()))
