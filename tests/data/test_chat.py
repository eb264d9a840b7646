"""The chat format: the ids equal transformers' `apply_chat_template` with the same template, and the
trained tokens are those open-instruct's SFT trains on (assistant content and eos), for multi-turn chats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from olmo2spec.data.chat import TULU_TEMPLATE, ChatFormatError, encode_chat, read_chat_file, render
from olmo2spec.data.tokenizer import ByteTokenizer, load_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Add 12 and 46."},
     {"role": "assistant", "content": "12 + 46 = 58, so the answer is 58."}],
    [{"role": "user", "content": "  spaces\n\nand newlines "}, {"role": "assistant", "content": " ok \n"},
     {"role": "user", "content": "ünïcödé ✓ 数学"}, {"role": "assistant", "content": "✓"},
     {"role": "user", "content": "a trailing question?"}],
]


def test_the_byte_tokenizer_trains_on_exactly_each_assistant_content_and_its_eos() -> None:
    tok = ByteTokenizer()
    example = encode_chat(tok, CONVERSATIONS[1])
    eos = tok.eos_id
    text = "".join(chr(i) if i < 256 else "E" for i in example.ids.tolist())
    assert text == ("E<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!E\n<|user|>\nAdd 12 and 46.\n"
                    "<|assistant|>\n12 + 46 = 58, so the answer is 58.E")
    trained = "".join(c for c, t in zip(text, example.trained.tolist(), strict=True) if t)
    assert trained == "Hello!E12 + 46 = 58, so the answer is 58.E"
    assert example.ids[0] == eos and not example.trained[0]  # bos, as OLMo 2 Instruct prepends it


def _hf(tokenizer_json: str):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|pad|>", chat_template=TULU_TEMPLATE)


def _hf_ids(hf, messages, prompt: bool = False) -> list[int]:  # type: ignore[no-untyped-def]
    out = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt)
    return list(out["input_ids"] if not isinstance(out, list) else out)


def _open_instruct_mask(hf, messages) -> list[bool]:  # type: ignore[no-untyped-def]
    """open-instruct's SFT label masking (sft_tulu_tokenize_and_truncate), on transformers' ids."""
    trained = [True] * len(_hf_ids(hf, messages))
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            continue
        start = 0 if i == 0 else len(_hf_ids(hf, messages[:i]))
        answered = i + 1 < len(messages) and messages[i + 1]["role"] == "assistant"
        end = len(_hf_ids(hf, messages[: i + 1], prompt=answered))
        trained[start:end] = [False] * (end - start)
    return trained


@pytest.mark.parametrize("name", ["bytes", "dolma2"])
def test_ids_and_trained_tokens_equal_transformers_apply_chat_template(name: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from olmo2spec.runtime.export_hf import bytes_tokenizer_json, dolma2_tokenizer_json

    hf = _hf(bytes_tokenizer_json() if name == "bytes" else dolma2_tokenizer_json())
    ours = load_tokenizer(name)
    for messages in CONVERSATIONS:
        example = encode_chat(ours, messages)
        assert example.ids.tolist() == _hf_ids(hf, messages)
        assert example.trained.tolist() == _open_instruct_mask(hf, messages)
        assert example.trained.any()
    # the prompt a chat model is asked with: the same text as transformers' generation prompt
    prompt = render(CONVERSATIONS[0][:1], "<|endoftext|>", "<|endoftext|>", add_generation_prompt=True)
    assert ours.encode(prompt, allow_special=True) == _hf_ids(hf, CONVERSATIONS[0][:1], prompt=True)


@pytest.mark.parametrize(("line", "says"), [
    ('{"messages": [{"role": "user", "content": "hi"}]}', 'no assistant turn'),
    ('{"prompt": "hi"}', 'field "messages": missing'),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0]\".role: 'bot'"),
    ('{"messages": [{"role": "assistant", "content": 3}]}', 'messages[0]".content: int'),
    ('{"messages": [', "not JSON"),
])
def test_a_bad_record_is_named_by_file_line_and_field(tmp_path: Path, line: str, says: str) -> None:
    good = json.dumps({"messages": CONVERSATIONS[0]})
    path = tmp_path / "train.jsonl"
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(ChatFormatError) as info:
        read_chat_file(path, ByteTokenizer())
    assert str(info.value).startswith(f"{path}:2: ")
    assert says in str(info.value)


def test_reading_stops_at_the_limit_and_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS) + "not json\n")
    examples = read_chat_file(path, ByteTokenizer(), limit=3)
    assert len(examples) == 3 and all(isinstance(e.ids, np.ndarray) for e in examples)
    with pytest.raises(ChatFormatError, match="demo-data"):
        read_chat_file(tmp_path / "none.jsonl", ByteTokenizer())
