"""The chat format of OLMo 2 Instruct: the Tulu template, its token ids, and which of them are trained on.

A conversation is a list of messages {"role": "system" | "user" | "assistant", "content": str}:

    <bos><|system|>\\n{system}\\n<|user|>\\n{user}\\n<|assistant|>\\n{answer}<eos>\\n<|user|>\\n...<eos>

`TULU_TEMPLATE` is that template as the Jinja text a Hugging Face tokenizer carries (open-instruct's
"tulu" template with the bos OLMo 2 Instruct's tokenizer prepends); `render` is the same text in
Python, so training needs no Jinja. `encode_chat` gives the ids of the whole rendered text (special
tokens as special ids, as `apply_chat_template(tokenize=True)` does) and a mask of the trained
tokens, found the way open-instruct's SFT finds them: every span from the start of a non-assistant
message to the end of its rendering (with the next `<|assistant|>\\n` when an assistant answers it) is
left out, so an assistant turn trains on its content and its eos.

`read_chat_file` reads a JSON-lines dataset ({"messages": [...]} per line) and says, for a bad record,
the file, line and field and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np

from olmo2spec.data.tokenizer import Tokenizer, TokenizerError

Record = TypeVar("Record")

__all__ = ["TULU_TEMPLATE", "ROLES", "ChatFormatError", "ChatExample", "render", "encode_chat", "check_messages",
           "read_chat_file", "read_jsonl_records", "chat_file"]

TULU_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}"
    "{{ '<|assistant|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
)
"""The template as Jinja, for a tokenizer_config.json (`apply_chat_template` renders it as `render` does)."""

ROLES = ("system", "user", "assistant")
ASSISTANT_PROMPT = "<|assistant|>\n"


class ChatFormatError(Exception):
    """A conversation is not one the chat format can render or train on; the message says where and why."""


@attrs.frozen
class ChatExample:
    """One tokenized conversation: its ids and which of them are trained on (assistant turns)."""

    ids: np.ndarray
    """(n,) int64 token ids, bos first."""
    trained: np.ndarray
    """(n,) bool: True on the tokens of assistant turns (content and eos)."""


def render(messages: Sequence[dict[str, str]], bos: str, eos: str, add_generation_prompt: bool = False) -> str:
    """The text `TULU_TEMPLATE` renders for `messages` with these bos and eos tokens."""
    parts = [bos]
    for i, message in enumerate(messages):
        role, content, last = message["role"], message["content"], i == len(messages) - 1
        if role == "system":
            parts.append("<|system|>\n" + content + "\n")
        elif role == "user":
            parts.append("<|user|>\n" + content + "\n")
        elif role == "assistant":
            parts.append(ASSISTANT_PROMPT + content + eos + ("" if last else "\n"))
        if last and add_generation_prompt:
            parts.append(ASSISTANT_PROMPT)
    return "".join(parts)


def _special_text(tokenizer: Tokenizer, token_id: int) -> str:
    return next(text for text, i in tokenizer.special_tokens.items() if i == token_id)


def encode_chat(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> ChatExample:
    """The ids of `messages` in the chat format and the mask of the assistant tokens.

    bos is `<|endoftext|>` (the eos), as in OLMo 2 Instruct's tokenizer. Messages must be valid
    (`check_messages`).
    """
    eos = _special_text(tokenizer, tokenizer.eos_id)

    def ids_of(upto: int, prompt: bool = False) -> list[int]:
        return tokenizer.encode(render(messages[:upto], eos, eos, prompt), allow_special=True)

    ids = ids_of(len(messages))
    trained = np.ones(len(ids), dtype=bool)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            continue
        start = 0 if i == 0 else len(ids_of(i))
        answered = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
        trained[start:len(ids_of(i + 1, prompt=answered))] = False
    return ChatExample(ids=np.asarray(ids, dtype=np.int64), trained=trained)


def check_messages(record: Any) -> list[dict[str, str]]:
    """The messages of one dataset record, checked.

    Raises:
        ChatFormatError: naming the field and what is wrong with it.
    """
    if not isinstance(record, dict) or "messages" not in record:
        raise ChatFormatError('field "messages": missing; each line is {"messages": [{"role": ..., '
                              '"content": ...}, ...]}')
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError('field "messages": not a non-empty list of messages')
    for i, message in enumerate(messages):
        field = f'field "messages[{i}]"'
        if not isinstance(message, dict):
            raise ChatFormatError(f'{field}: not an object {{"role": ..., "content": ...}}')
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ChatFormatError(f"{field}.role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ChatFormatError(f"{field}.content: {type(content).__name__}, not a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise ChatFormatError('field "messages": no assistant turn, so nothing to train on; give each '
                              "conversation at least one message with role \"assistant\"")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def chat_file(root: Path, dataset: str) -> Path:
    """Where a post-training dataset's conversations are: ${DATA_ROOT}/post-training/<dataset>/train.jsonl."""
    return root / "post-training" / dataset / "train.jsonl"


def read_chat_file(path: Path, tokenizer: Tokenizer, limit: int | None = None) -> list[ChatExample]:
    """The first `limit` conversations (all when None) of a JSON-lines file, tokenized.

    Raises:
        ChatFormatError: the file is missing or unreadable, or a line is not a valid conversation
            (the message names the file, the line and the field).
    """
    return read_jsonl_records(path, lambda record: encode_chat(tokenizer, check_messages(record)), limit)


def read_jsonl_records(path: Path, parse: Callable[[Any], Record], limit: int | None = None) -> list[Record]:
    """`parse` of each of the first `limit` records (all when None) of a post-training JSON-lines file.

    Raises:
        ChatFormatError: the file is missing, unreadable or not UTF-8, a line is not JSON, or `parse`
            refuses a record (ChatFormatError or TokenizerError): the message names the file and line.
    """
    records: list[Record] = []
    try:
        with open(path, encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, 1):
                if limit is not None and len(records) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    records.append(parse(json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ChatFormatError(f"{path}:{lineno}: not JSON ({exc.msg} at column {exc.colno})") from None
                except (ChatFormatError, TokenizerError) as exc:
                    raise ChatFormatError(f"{path}:{lineno}: {exc}") from None
    except FileNotFoundError:
        raise ChatFormatError(f"{path} not found: write the dataset there (`olmo2spec demo-data DIR` writes the "
                              "demo's), or set DATA_ROOT to the directory that holds post-training/") from None
    except UnicodeDecodeError as exc:
        raise ChatFormatError(f"{path}: not UTF-8 (byte {exc.start}): save the file as UTF-8") from None
    except OSError as exc:
        raise ChatFormatError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return records
