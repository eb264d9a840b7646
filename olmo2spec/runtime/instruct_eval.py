"""What post-training changed, measured on held-out data: the demo's instruct columns.

Each post-training stage of the tiny recipe should have a visible effect, and each is measured
on the held-out file beside its training data (`${DATA_ROOT}/post-training/<dataset>/heldout.jsonl`,
written by `olmo2spec demo-data`: prompts no train file asks, math from the held-out split):

- `chat`, after SFT (the sft stage's dataset): the model answers in the chat format. Each held-out
  conversation's prompt is rendered in the Tulu template with the generation prompt and decoded
  greedily; an answer is *parseable* when the model ends its turn (eos) within the budget with a
  non-empty answer that opens no new turn (no `<|user|>`, `<|assistant|>`, `<|system|>` tag).
  `format` is the share of parseable answers, `exact` the share identical to the reference answer.
- `preferences`, after DPO (the dpo stage's dataset): `accuracy` is the share of held-out pairs whose
  chosen response has the higher length-normalised log-probability under the model (the quantity
  `dpo_norm` trains; a reference-free form of DPO's reward accuracy, so every model is comparable).
- `math`, after RLVR (the rlvr stage's dataset, first verifier and temperature): on held-out math
  prompts, `reward` is the mean verifier score (0 or 1 each, before the stage's `verifier_reward`
  scale) of `MATH_SAMPLES` responses sampled per prompt as RLVR samples them (the stage's
  temperature and `response_len`; fixed noise, so a rerun gives the same number): what RLVR
  optimises. `exact` is the exact-match accuracy of the greedy response's answer as
  `evaluate.extract_answer` reads it (the number after "answer is", else after the last "=").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from olmo2spec.data.chat import ChatFormatError, check_messages, read_jsonl_records, render
from olmo2spec.data.preferences import PreferencePair, pair_arrays, read_preference_file
from olmo2spec.data.sft_batches import next_token_labels
from olmo2spec.data.tokenizer import Tokenizer, load_tokenizer
from olmo2spec.plan.plan import Plan, PostTrainStagePlan
from olmo2spec.runtime.dpo_loss import response_logps
from olmo2spec.runtime.evaluate import CHAT_BOS, EvalDataError, EvalError, answers_match, extract_answer, greedy_turns
from olmo2spec.runtime.model import Transformer

__all__ = ["INSTRUCT_TASKS", "InstructData", "heldout_file", "chat_format", "preference_accuracy",
           "math_reward", "evaluate_instruct"]

INSTRUCT_TASKS = ("chat", "preferences", "math")
TURN_TAGS = ("<|user|>", "<|assistant|>", "<|system|>")
MATH_SAMPLES = 4
"""Responses sampled per held-out math prompt for the mean verifier reward."""
MATH_SEED = 0
CHAT_SLACK_TOKENS = 16
"""Tokens allowed beyond the longest held-out reference answer before an answer counts as unended."""


def heldout_file(data_root: Path, dataset: str) -> Path:
    return Path(data_root) / "post-training" / dataset / "heldout.jsonl"


class InstructData:
    """Which held-out files the instruct tasks read, and the settings they take from the plan."""

    def __init__(self, plan: Plan, data_root: Path) -> None:
        self.files: dict[str, Path] = {}
        self.seq_len = plan.model.max_seq_len
        self.response_len = 0
        self.verifier = "gsm8k"
        self.temperature = 1.0
        for stage in plan.stages:
            if not isinstance(stage, PostTrainStagePlan):
                continue
            task = {"sft": "chat", "dpo": "preferences", "rlvr": "math"}.get(stage.kind)
            if task is None or task in self.files:
                continue  # the first stage of a kind decides (a chained second RLVR stage reuses it)
            self.files[task] = heldout_file(data_root, stage.dataset)
            if task == "preferences":
                self.seq_len = stage.max_seq_len
            if task == "math":
                hp = stage.hyperparameters
                response_len = hp.get("response_len", 64)
                assert isinstance(response_len, int), response_len  # the spec's validator: a positive integer
                self.response_len = response_len
                verifiers = hp.get("verifiers") or ["gsm8k"]
                assert isinstance(verifiers, list)
                self.verifier = str(verifiers[0])
                temperature = hp.get("temperature", 1.0)
                assert isinstance(temperature, int | float), temperature
                self.temperature = float(temperature)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in INSTRUCT_TASKS if t in self.files)


def _records(path: Path) -> list[dict[str, Any]]:
    def parse(record: Any) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise ChatFormatError("not a JSON object")
        return record

    try:
        return read_jsonl_records(path, parse)
    except ChatFormatError as exc:
        raise EvalDataError(str(exc)) from None


def _prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The Tulu rendering of the messages with the generation prompt, bos included (as SFT trains)."""
    return render([dict(m) for m in messages], CHAT_BOS, CHAT_BOS, add_generation_prompt=True)


def _parseable(text: str, ended: bool) -> bool:
    return ended and bool(text.strip()) and not any(tag in text for tag in TURN_TAGS)


def chat_format(model: Transformer, tokenizer: Tokenizer, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Greedy answers to held-out conversations {"messages": [..., assistant]}: share parseable, share exact."""
    prompts, references = [], []
    for i, record in enumerate(records):
        try:
            messages = check_messages(record)
        except ChatFormatError as exc:
            raise EvalDataError(f"held-out conversation {i + 1}: {exc}") from None
        if messages[-1]["role"] != "assistant":
            raise EvalDataError(f"held-out conversation {i + 1}: its last message is not the assistant's answer")
        prompts.append(_prompt(messages[:-1]))
        references.append(messages[-1]["content"])
    budget = max((len(tokenizer.encode(r)) for r in references), default=0) + CHAT_SLACK_TOKENS
    turns = greedy_turns(model, tokenizer, prompts, budget, stop=None)
    parseable = [_parseable(text, ended) for text, ended in turns]
    exact = [ok and text.strip() == ref.strip()
             for (text, _), ok, ref in zip(turns, parseable, references, strict=True)]
    n = len(records)
    return {"format": sum(parseable) / n if n else 0.0, "exact": sum(exact) / n if n else 0.0, "n": n,
            "max_new_tokens": budget, "examples": [{"answer": t, "ended": e} for t, e in turns[:3]]}


@torch.no_grad()
def preference_accuracy(model: Transformer, tokenizer: Tokenizer, pairs: Sequence[PreferencePair], seq_len: int,
                        pad_id: int, batch_pairs: int = 32) -> dict[str, Any]:
    """Share of pairs whose chosen response has the higher length-normalised log-prob; mean log-prob margin."""
    device = next(model.parameters()).device
    wins, margins = 0, []
    for start in range(0, len(pairs), batch_pairs):
        chunk = pairs[start:start + batch_pairs]
        sequences = [next_token_labels(side, seq_len) for p in chunk for side in (p.chosen, p.rejected)]
        tokens, labels = (torch.from_numpy(a).to(device) for a in pair_arrays(sequences, pad_id))
        logps = response_logps(model(tokens), labels, "dpo_norm").view(-1, 2).double()
        wins += int((logps[:, 0] > logps[:, 1]).sum())
        margins += (logps[:, 0] - logps[:, 1]).tolist()
    n = len(pairs)
    return {"accuracy": wins / n if n else 0.0, "margin": float(np.mean(margins)) if margins else 0.0, "n": n}


def _sampled(model: Transformer, tokenizer: Tokenizer, prompts: Sequence[str], samples: int, response_len: int,
             temperature: float) -> list[str]:
    """`samples` sampled responses to each prompt (prompt-major), eos and padding left out."""
    from olmo2spec.runtime.sampling import banned_ids, sample, sampling_generator

    device = next(model.parameters()).device
    ids = [tokenizer.encode(p, allow_special=True) for p in prompts for _ in range(samples)]
    banned = banned_ids(model.args.vocab_rows, tokenizer.vocab_size, tokenizer.pad_id, device)
    out = sample(model, ids, max_new_tokens=response_len, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                 temperature=temperature, banned=banned, generator=sampling_generator(MATH_SEED, 0, device))
    keep = out.mask & (out.responses != tokenizer.eos_id)
    return [tokenizer.decode(row[k].tolist()) for row, k in zip(out.responses, keep, strict=True)]


def math_reward(model: Transformer, tokenizer: Tokenizer, records: Sequence[Mapping[str, Any]], response_len: int,
                verifier: str, temperature: float = 1.0, samples: int = MATH_SAMPLES) -> dict[str, Any]:
    """Held-out math prompts {"messages": [user], "answer"}: the mean verifier score of `samples` sampled
    responses per prompt (`reward`), and of the greedy response (`greedy_reward`), and the greedy answer's
    exact match (`exact`)."""
    from olmo2spec.posttrain.verifiers import VerifierError, verify

    prompts, answers = [], []
    for i, record in enumerate(records):
        messages, answer = record.get("messages"), record.get("answer")
        if not isinstance(messages, list) or not messages or answer is None:
            raise EvalDataError(f'held-out math prompt {i + 1}: needs "messages" (the prompt) and "answer"')
        prompts.append(_prompt(messages))
        answers.append(str(answer))
    turns = greedy_turns(model, tokenizer, prompts, response_len, stop=None)
    sampled = _sampled(model, tokenizer, prompts, samples, response_len, temperature) if prompts else []
    try:
        greedy = [verify(verifier, text, answer) for (text, _), answer in zip(turns, answers, strict=True)]
        scores = [verify(verifier, text, answers[i // samples]) for i, text in enumerate(sampled)]
    except VerifierError as exc:
        raise EvalError(f"verifier {verifier!r}: {exc}") from None
    exact = [answers_match(extract_answer(text), answer) for (text, _), answer in zip(turns, answers, strict=True)]
    n = len(records)
    return {"reward": sum(scores) / len(scores) if scores else 0.0, "greedy_reward": sum(greedy) / n if n else 0.0,
            "exact": sum(exact) / n if n else 0.0, "n": n, "samples": samples, "temperature": temperature,
            "verifier": verifier, "eos": sum(e for _, e in turns) / n if n else 0.0}


def evaluate_instruct(plan: Plan, model: Transformer, data: InstructData) -> dict[str, Any]:
    """Every instruct task `data` has a file for, on `model`: {task: numbers, "seconds": {task: s}}."""
    tokenizer = load_tokenizer(plan.tokenizer.name)
    result: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for task in data.tasks:
        start = time.perf_counter()
        path = data.files[task]
        if task == "chat":
            result[task] = chat_format(model, tokenizer, _records(path))
        elif task == "preferences":
            try:
                pairs = read_preference_file(path, tokenizer)
            except ChatFormatError as exc:
                raise EvalDataError(str(exc)) from None
            result[task] = preference_accuracy(model, tokenizer, pairs, data.seq_len, plan.tokenizer.pad_id)
        else:
            result[task] = math_reward(model, tokenizer, _records(path), data.response_len, data.verifier,
                                       data.temperature)
        seconds[task] = round(time.perf_counter() - start, 2)
    result["seconds"] = seconds
    return result
