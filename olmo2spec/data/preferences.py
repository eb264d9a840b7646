"""Preference pairs for DPO: reading them, and the batches of a run.

A line of the dataset is either `{"prompt": [...], "chosen": [...], "rejected": [...]}` (the
responses' messages follow the prompt's) or `{"chosen": [...], "rejected": [...]}` with whole
conversations (open-instruct's form). Each side is rendered in the Tulu chat format; only its last
assistant message is a response the loss looks at (the prompt and earlier turns are context).

Step s takes pairs [s * batch_size, (s + 1) * batch_size) of the run's order (each epoch a
permutation seeded by (seed, epoch), as SFT's); rank r takes every world_size-th of them. A pair's
chosen and rejected sequences go through the model in the same micro-batch (rows 2i and 2i+1),
padded on the right to the micro-batch's longest; every rank runs as many micro-batches (FSDP's
collectives need the same count), one with no pairs left runs a pair of padding with no labels.
Everything is a function of the step, so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from olmo2spec.data.chat import ChatExample, ChatFormatError, check_messages, encode_chat, read_jsonl_records, render
from olmo2spec.data.sft_batches import IGNORE, next_token_labels
from olmo2spec.data.tokenizer import Tokenizer

__all__ = ["PreferencePair", "PairBatch", "PreferenceBatches", "read_preference_file", "pair_arrays"]


@attrs.frozen
class PreferencePair:
    chosen: ChatExample
    rejected: ChatExample


def _response_only(tokenizer: Tokenizer, messages: list[dict[str, str]]) -> ChatExample:
    """The conversation's ids, trained only on its last message (the assistant's response and its eos)."""
    example = encode_chat(tokenizer, messages)
    eos = next(text for text, i in tokenizer.special_tokens.items() if i == tokenizer.eos_id)
    # the earlier turns and the assistant prompt are context, as open-instruct masks them
    context = len(tokenizer.encode(render(messages[:-1], eos, eos, add_generation_prompt=True), allow_special=True))
    trained = example.trained.copy()
    trained[:context] = False
    return ChatExample(ids=example.ids, trained=trained)


def _field(index: int, prompt: int, side: str) -> str:
    return f'"prompt[{index}]' if index < prompt else f'"{side}[{index - prompt}]'


def _side(record: dict[str, Any], side: str) -> list[dict[str, str]]:
    if side not in record:
        raise ChatFormatError(f'field "{side}": missing; each line is {{"prompt": [...], "chosen": [...], '
                              '"rejected": [...]}} (or "chosen" and "rejected" as whole conversations)')
    messages = record[side]
    if not isinstance(messages, list):
        raise ChatFormatError(f'field "{side}": not a list of messages')
    prompt = record.get("prompt", [])
    if not isinstance(prompt, list):
        raise ChatFormatError('field "prompt": not a list of messages')
    last = messages[-1] if messages else None
    role = last.get("role") if isinstance(last, dict) else None
    if role != "assistant":
        raise ChatFormatError(f'field "{side}": its last message is {f"the {role}" if role else "not"}\'s; end it '
                              "with the assistant's response")
    try:
        checked = check_messages({"messages": prompt + messages})
    except ChatFormatError as exc:  # name the message by the field it is in
        raise ChatFormatError(re.sub(r'"messages\[(\d+)\]', lambda m: _field(int(m[1]), len(prompt), side),
                                     str(exc))) from None
    return checked


def read_preference_file(path: Path, tokenizer: Tokenizer, limit: int | None = None) -> list[PreferencePair]:
    """The first `limit` pairs (all when None) of a JSON-lines file, tokenized.

    Raises:
        ChatFormatError: the file is missing or unreadable, or a line is not a valid pair (the message
            names the file, the line and the field).
    """
    def parse(record: Any) -> PreferencePair:
        if not isinstance(record, dict):
            raise ChatFormatError('not an object {"prompt": ..., "chosen": ..., "rejected": ...}')
        return PreferencePair(chosen=_response_only(tokenizer, _side(record, "chosen")),
                              rejected=_response_only(tokenizer, _side(record, "rejected")))

    return read_jsonl_records(path, parse, limit)


def pair_arrays(sequences: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, labels) of (ids, labels) sequences, right-padded to the longest (labels IGNORE there)."""
    width = max(1, max((len(ids) for ids, _ in sequences), default=1))
    tokens = np.full((len(sequences), width), pad_id, dtype=np.int64)
    labels = np.full((len(sequences), width), IGNORE, dtype=np.int64)
    for r, (ids, lab) in enumerate(sequences):
        tokens[r, :len(ids)], labels[r, :len(ids)] = ids, lab
    return tokens, labels


@attrs.frozen
class PairBatch:
    """One rank's share of one step."""

    micro_batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    """(tokens (2P, T), labels (2P, T), pair indices (P,), -1 for padding), rows chosen, rejected, chosen, ..."""
    pairs: int
    """This rank's pairs (padding not counted)."""
    global_pairs: int
    """The step's pairs over all ranks."""
    tokens: int
    """Tokens of this rank's sequences (padding not counted)."""


class PreferenceBatches:
    """The batches of one DPO run (every rank builds the same object and takes its own pairs)."""

    def __init__(self, pairs: Sequence[PreferencePair], *, batch_size: int, epochs: int, seq_len: int, seed: int,
                 pad_id: int, micro_pairs: int, rank: int = 0, world_size: int = 1) -> None:
        self.batch_size, self.seq_len, self.pad_id = batch_size, seq_len, pad_id
        self.micro_pairs, self.rank, self.world_size = micro_pairs, rank, world_size
        self.sequences = [(next_token_labels(p.chosen, seq_len), next_token_labels(p.rejected, seq_len))
                          for p in pairs]
        self.lengths = np.array([len(c[0]) + len(r[0]) for c, r in self.sequences], dtype=np.int64)
        self.cut = sum(len(p.chosen.ids) > seq_len or len(p.rejected.ids) > seq_len for p in pairs)
        """Pairs with a side longer than seq_len, cut."""
        n = len(pairs)
        self.order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(n) for epoch in range(epochs)])
        self.steps = math.ceil(len(self.order) / batch_size)

    def step_pairs(self, step: int) -> np.ndarray:
        return self.order[step * self.batch_size:(step + 1) * self.batch_size]

    def tokens_before(self, step: int) -> int:
        return int(self.lengths[self.order[:step * self.batch_size]].sum())

    def rows(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, labels) of pairs `indices` (-1: a pair of padding), chosen then rejected for each."""
        empty = (np.array([self.pad_id], dtype=np.int64), np.array([IGNORE], dtype=np.int64))
        sequences = [side for i in indices for side in (self.sequences[i] if i >= 0 else (empty, empty))]
        return pair_arrays(sequences, self.pad_id)

    def batch(self, step: int) -> PairBatch:
        chosen = self.step_pairs(step)
        mine = chosen[self.rank::self.world_size]
        most = math.ceil(len(chosen) / self.world_size)
        count = max(1, math.ceil(most / self.micro_pairs))
        micro = []
        for i in range(count):
            part = [int(j) for j in mine[i * self.micro_pairs:(i + 1) * self.micro_pairs]] or [-1]
            tokens, labels = self.rows(part)
            micro.append((tokens, labels, np.array(part, dtype=np.int64)))
        return PairBatch(micro_batches=micro, pairs=len(mine), global_pairs=len(chosen),
                         tokens=int(self.lengths[mine].sum()))
