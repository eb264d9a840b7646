"""RLVR's prompts: a conversation to answer and the ground truth a verifier checks the answer against.

A line of the dataset is `{"messages": [...], "answer": ...}` (the demo's) or open-instruct's
`{"messages": [...], "ground_truth": ..., "dataset": "gsm8k" | "MATH" | "ifeval"}`. The messages end
with a user turn; the prompt is their Tulu chat rendering with the assistant prompt after it. Which
verifier checks a record: its "verifier" (or "dataset") field, lower-cased, which must be one of
the stage's; a stage with one verifier needs neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from olmo2spec.data.chat import ROLES, ChatFormatError, read_jsonl_records, render
from olmo2spec.data.tokenizer import Tokenizer

__all__ = ["Prompt", "read_prompt_file", "prompt_reader"]


@attrs.frozen
class Prompt:
    ids: list[int]
    """The rendered prompt's token ids: bos, the turns, then the assistant prompt."""
    ground_truth: object
    verifier: str


def _messages(record: dict[str, Any]) -> list[dict[str, str]]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError('field "messages": missing or empty; each line is {"messages": [{"role": "user", '
                              '"content": ...}], "answer": ...}')
    for i, message in enumerate(messages):
        field = f'field "messages[{i}]"'
        if not isinstance(message, dict):
            raise ChatFormatError(f'{field}: not an object {{"role": ..., "content": ...}}')
        if message.get("role") not in ROLES:
            raise ChatFormatError(f"{field}.role: {message.get('role')!r} is not one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ChatFormatError(f"{field}.content: {type(message.get('content')).__name__}, not a string")
    if messages[-1]["role"] == "assistant":
        raise ChatFormatError(f'field "messages[{len(messages) - 1}]": the prompt ends with an assistant turn; '
                              "end it with the user's, which the policy answers")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _verifier(record: dict[str, Any], verifiers: Sequence[str]) -> str:
    for field in ("verifier", "dataset"):
        if field in record:
            name = str(record[field]).lower()
            if name not in verifiers:
                raise ChatFormatError(f'field "{field}": {record[field]!r} is not one of the stage\'s verifiers '
                                      f"({', '.join(verifiers)}): add it to the stage's `verifiers`")
            return name
    if len(verifiers) != 1:
        raise ChatFormatError(f'field "verifier": missing, and the stage has {len(verifiers)} verifiers '
                              f"({', '.join(verifiers)}): say which checks this prompt")
    return verifiers[0]


def _parse(record: Any, tokenizer: Tokenizer, verifiers: Sequence[str]) -> Prompt:
    if not isinstance(record, dict):
        raise ChatFormatError('not an object {"messages": [...], "answer": ...}')
    messages = _messages(record)
    truth_field = "answer" if "answer" in record else "ground_truth"
    if truth_field not in record:
        raise ChatFormatError('field "answer": missing; give the ground truth the verifier checks the response '
                              'against ("answer" or "ground_truth")')
    eos = next(text for text, i in tokenizer.special_tokens.items() if i == tokenizer.eos_id)
    ids = tokenizer.encode(render(messages, eos, eos, add_generation_prompt=True), allow_special=True)
    return Prompt(ids=ids, ground_truth=record[truth_field], verifier=_verifier(record, verifiers))


def read_prompt_file(path: Path, tokenizer: Tokenizer, verifiers: Sequence[str], limit: int | None = None
                     ) -> list[Prompt]:
    """The first `limit` prompts (all when None) of a JSON-lines file, tokenized.

    Raises:
        ChatFormatError: the file is missing or unreadable, or a line is not a valid prompt (the message
            names the file, the line and the field).
    """
    return read_jsonl_records(path, lambda record: _parse(record, tokenizer, verifiers), limit)


def prompt_reader(verifiers: Sequence[str]) -> Callable[[Path, Tokenizer, int | None], list[Prompt]]:
    """`read_prompt_file` for a stage's verifiers, in the (path, tokenizer, limit) form the Trainer reads with."""
    def read(path: Path, tokenizer: Tokenizer, limit: int | None) -> list[Prompt]:
        return read_prompt_file(path, tokenizer, verifiers, limit)
    return read
