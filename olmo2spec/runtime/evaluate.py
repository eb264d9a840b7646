"""Evaluation stages: the demo suite in process, the OLMES suites through a Hugging Face export.

The demo suite (`plan/evals.py`) has three tasks, reported apart as the paper advocates (section
2.5): `demo-math-dev` and `demo-heldout-loss` may guide decisions, `demo-math-heldout` is only
reported. `run_eval_stage` evaluates each target run's final checkpoint and writes
`$CHECKPOINT_ROOT/<stage>/<target>/results.json` (plus the per-item math answers beside it);
`evaluate_checkpoint` does the same for any final checkpoint (the pretrained model, each anneal
ingredient, the soup) and returns the numbers.

Held-out loss. Per source of `eval/heldout-text.jsonl` (web, code: text never in a training
shard): every document tokenized with eos appended, concatenated, cut into windows of the
model's `max_seq_len` as the trainer cuts token files (position t predicts token t+1 inside a
window); the last, shorter window is padded and its padding masked. Mean cross-entropy in
nats per token.

Math: prompts in the format of the training text. The demo corpus's math train shards
(`raw/math/*.jsonl.gz`) phrase problems in two ways:

    arithmetic, one fact per line, question and answer on one line:
        What is 4970 divided by 70? The answer is 71.
        Add 12 and 46. 12 + 46 = 58, so the answer is 58.
        Divide 672 by 84. 672 / 84 = 8.
    word problems, GSM8K-style: the question, a worked solution line by line, the answer after ####:
        Sam earns 22 dollars per hour and works 3 hours a day. How many dollars does he earn in 7 days?
        Each day he earns 22 * 3 = 66 dollars.
        In 7 days he earns 66 * 7 = 462 dollars.
        #### 462

so with `prompt_format="base"` (pretrained, annealed and souped models):

    arithmetic:    "<question> "   greedy up to a newline (or eos), at most 48 new tokens
    word problem:  "<question>\\n"  greedy up to the end of the "#### N" line (or eos), at most 160

and with `prompt_format="chat"` (models of sft/dpo/rlvr stages) the Tulu template OLMo 2's
post-training uses (olmo2spec/data/chat.py), `"<bos><|user|>\\n<question>\\n<|assistant|>\\n"`,
greedy up to eos (the demo chat data answers "... The answer is N."), at most 160 new tokens.

The predicted answer (`extract_answer`): the first number after "####" if there is one; else
the first number after the last "answer is"; else, for arithmetic, the first number after the
last "=" (the "a * b = c" answers) or the first number of the continuation; for word problems
the last number of the continuation. Thousands separators are dropped and the number compared
as a number with the item's answer ("1,078." matches 1078).

Generation is batched greedy decoding with a key/value cache (prompts left-padded, each row's
positions starting at 0 so that padding changes nothing; finished rows leave the batch). Past
`max_seq_len` tokens the cache slides: each new token attends to the last `max_seq_len` tokens,
the context the model was trained on.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from olmo2spec.atomic import write_json_atomic
from olmo2spec.data.chat import render
from olmo2spec.data.tokenizer import Tokenizer
from olmo2spec.exitcodes import ExitCode
from olmo2spec.kinds import stage_kind
from olmo2spec.plan.plan import EvalStagePlan, Plan, PostTrainStagePlan, SoupStagePlan, TrainStagePlan
from olmo2spec.runtime.bundle import RunContext, wanted_device
from olmo2spec.runtime.checkpoint import (
    CheckpointError,
    final_step,
    plan_model_weights,
    plan_of,
    read_marker,
    resolve_step,
)
from olmo2spec.runtime.model import KVCache, ModelArgs, Transformer
from olmo2spec.textgrid import render_grid

__all__ = [
    "EvalError", "EvalDataError", "PROMPT_FORMATS", "DEMO_TASKS", "load_model", "heldout_loss", "greedy_answers",
    "greedy_turns",
    "extract_answer", "answers_match", "math_prompt", "math_accuracy", "evaluate_checkpoint", "run_eval_stage",
    "decode_threads",
]

PROMPT_FORMATS = ("base", "chat")
DEMO_TASKS = ("demo-math-dev", "demo-heldout-loss", "demo-math-heldout")
MATH_FILES = {"demo-math-dev": "eval/math-dev.jsonl", "demo-math-heldout": "eval/math-heldout.jsonl"}
HELDOUT_TEXT = "eval/heldout-text.jsonl"

ARITHMETIC_NEW_TOKENS = 48
"""Enough for "1234 / 12 = 102, so the answer is 102." in bytes (the longest training answer)."""
WORD_PROBLEM_NEW_TOKENS = 160
"""The longest worked solution plus "#### N" in the demo corpus's math is 152 bytes."""
CHAT_BOS = "<|endoftext|>"
NEWLINE = re.compile(r"\n")
AFTER_ANSWER_LINE = re.compile(r"####[^\n]*(\n)")
"""A continuation ends at the newline that closes its "#### N" line."""

_NUMBER = re.compile(r"(?<![\d.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")

Generate = Callable[[Sequence[str], int, "re.Pattern[str] | None"], list[str]]
"""(prompts, max_new_tokens, stop) -> continuations: what `math_accuracy` generates with."""


class EvalError(Exception):
    """A checkpoint, data file or setting the evaluation needs is missing or wrong; the message says which."""

    exit_code = ExitCode.CHECKPOINT


class EvalDataError(EvalError):
    """An eval file is missing: the demo corpus was not built where DATA_ROOT says."""

    exit_code = ExitCode.DATA


# --- the model ------------------------------------------------------------------------------------------------


def _resolve(checkpoint_dir: Path, plan: Plan | None) -> tuple[Path, Plan]:
    """A complete step directory, or the final step of a run directory; and `plan`, else the one the step carries."""
    try:
        path = resolve_step(checkpoint_dir, final=True)
        return path, plan_of(path, plan)
    except CheckpointError as exc:
        raise EvalError(str(exc)) from None


def load_model(plan: Plan | None, checkpoint_dir: Path, device: str | torch.device = "cpu") -> Transformer:
    """The model of a checkpoint of `plan`, in fp32 and eval mode on `device`, in this process alone.

    `checkpoint_dir` is a step directory or a run directory (its final checkpoint); `plan` None: the plan
    the step carries.

    Raises:
        EvalError: no such checkpoint, not complete or not final, or weights that do not fit the plan's model.
    """
    path, plan = _resolve(Path(checkpoint_dir), plan)
    with warnings.catch_warnings():  # DCP without a process group
        warnings.simplefilter("ignore")
        try:
            weights = plan_model_weights(path, plan)  # verified, and checked to be the plan's model
        except CheckpointError as exc:
            raise EvalError(str(exc)) from None
    args = ModelArgs.from_plan(plan)
    with torch.device("meta"):
        model = Transformer(args)
    model.to_empty(device=device)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    model.init_rope()
    return model.float().eval()


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- held-out loss ----------------------------------------------------------------------------------------------


@torch.no_grad()
def heldout_loss(model: Transformer, tokenizer: Tokenizer, docs_by_source: Mapping[str, Sequence[str]],
                 seq_len: int, batch: int = 16) -> dict[str, float]:
    """Mean next-token cross-entropy (nats/token) per source of held-out documents.

    Each source's documents, eos appended to each, are concatenated and cut into windows of
    `seq_len` tokens; the last window is padded (its padding not scored). Sources with fewer
    than two tokens are left out.
    """
    model.eval()
    device = _device(model)
    seq_len = min(seq_len, model.args.max_seq_len)
    losses: dict[str, float] = {}
    for source, docs in docs_by_source.items():
        ids: list[int] = []
        for encoded in tokenizer.encode_batch(list(docs)):
            ids += encoded
            ids.append(tokenizer.eos_id)
        if len(ids) < 2:
            continue
        rows = math.ceil(len(ids) / seq_len)
        flat = torch.full((rows * seq_len,), tokenizer.pad_id, dtype=torch.long)
        flat[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        valid = torch.zeros(rows * seq_len, dtype=torch.bool)
        valid[: len(ids)] = True
        tokens, valid = flat.view(rows, seq_len), valid.view(rows, seq_len)
        labels = torch.full_like(tokens, -100)
        labels[:, :-1] = torch.where(valid[:, 1:], tokens[:, 1:], -100)
        total, count = 0.0, 0
        for start in range(0, rows, batch):
            x = tokens[start:start + batch].to(device)
            y = labels[start:start + batch].to(device)
            logits = model(x).float()
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"))
            count += int((y != -100).sum())
        losses[source] = total / count
    return losses


# --- greedy decoding --------------------------------------------------------------------------------------------


def _cut(text: str, stop: re.Pattern[str] | None) -> str | None:
    """`text` up to where `stop` says it ends (its first group if it has one, else its match), or None."""
    if stop is None:
        return None
    m = stop.search(text)
    if m is None:
        return None
    return text[: m.start(1) if m.re.groups else m.start()]


SMALL_DECODE_MACS = 2**26
"""Below this many multiply-adds per decode-step matmul, CPU decoding runs on one thread."""


@contextlib.contextmanager
def decode_threads(device: torch.device, macs: int) -> Iterator[None]:
    """One intra-op thread for the small matmuls of decoding a small model on a CPU.

    Splitting a (128 x 256) @ (256 x 768) product gains little on an idle machine, and when
    another process holds a core every op waits for the descheduled thread: decoding the demo
    suite took 4x longer on two busy cores than on one thread.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or macs >= SMALL_DECODE_MACS or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _generate_batch(model: Transformer, tokenizer: Tokenizer, prompts: list[list[int]], max_new_tokens: int,
                    eos: int, stop: re.Pattern[str] | None) -> list[tuple[str, bool]]:
    """(continuation, whether eos or `stop` ended it rather than the budget) of each prompt."""
    device = _device(model)
    window = model.args.max_seq_len
    prompts = [p[-window:] if p else [eos] for p in prompts]  # an empty prompt starts from a document boundary
    B, L = len(prompts), max(len(p) for p in prompts)
    total = L + max_new_tokens
    pads = torch.tensor([L - len(p) for p in prompts], device=device)
    tokens = torch.full((B, L), tokenizer.pad_id, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
    cache = KVCache(model.args, pads, total)
    logits = model(tokens, cache=cache, last_only=True).float()  # (B, V)
    banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
    banned[tokenizer.vocab_size:] = True  # padding rows of the embedding: never trained
    banned[tokenizer.pad_id] = True

    rows = list(range(B))  # batch row -> prompt index
    generated: list[list[int]] = [[] for _ in range(B)]
    out: list[tuple[str, bool] | None] = [None] * B
    with decode_threads(device, B * model.args.d_model * model.args.mlp_hidden):
        for step in range(max_new_tokens):
            nxt = logits.masked_fill(banned, float("-inf")).argmax(dim=-1)
            done: list[int] = []
            for r, token in enumerate(nxt.tolist()):
                i = rows[r]
                if token == eos:
                    out[i] = tokenizer.decode(generated[i]), True
                    done.append(r)
                    continue
                generated[i].append(token)
                text = tokenizer.decode(generated[i])
                cut = _cut(text, stop)
                if cut is not None:
                    out[i] = cut, True
                    done.append(r)
            if step == max_new_tokens - 1 or len(done) == len(rows):
                break
            if done:
                finished = set(done)
                keep = torch.tensor([r for r in range(len(rows)) if r not in finished], device=device)
                rows = [rows[r] for r in keep.tolist()]
                cache.keep(keep)
                nxt = nxt[keep]
            logits = model(nxt.unsqueeze(1), cache=cache, last_only=True).float()
    return [o if o is not None else (tokenizer.decode(g), False) for o, g in zip(out, generated, strict=True)]


@torch.no_grad()
def greedy_answers(model: Transformer, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                   eos: int | None = None, *, stop: str | re.Pattern[str] | None = NEWLINE,
                   batch_size: int = 128) -> list[str]:
    """The greedy continuation of each prompt, batched.

    A continuation ends before the eos token (`eos`, default the tokenizer's), where `stop` (a
    regular expression searched in the decoded continuation) matches: before its first group if
    it has one, else before the match (default: before the first newline), or after
    `max_new_tokens` tokens. Ids the tokenizer cannot decode (the embedding's padding rows) and
    the pad id are never chosen. Prompts are sorted by length and decoded `batch_size` at a time;
    the result does not depend on the order of `prompts`.
    """
    return [text for text, _ in greedy_turns(model, tokenizer, prompts, max_new_tokens, eos, stop=stop,
                                             batch_size=batch_size)]


@torch.no_grad()
def greedy_turns(model: Transformer, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                 eos: int | None = None, *, stop: str | re.Pattern[str] | None = NEWLINE,
                 batch_size: int = 128) -> list[tuple[str, bool]]:
    """`greedy_answers`, each with whether eos or `stop` ended it (False: it ran out of `max_new_tokens`)."""
    model.eval()
    eos = tokenizer.eos_id if eos is None else eos
    pattern = re.compile(stop) if isinstance(stop, str) else stop
    encoded = [tokenizer.encode(p, allow_special=True) for p in prompts]  # a chat prompt's bos
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    results: list[tuple[str, bool]] = [("", False)] * len(prompts)
    if max_new_tokens <= 0:
        return results
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, turn in zip(chunk, _generate_batch(model, tokenizer, [encoded[i] for i in chunk], max_new_tokens,
                                                  eos, pattern), strict=True):
            results[i] = turn
    return results


# --- math -------------------------------------------------------------------------------------------------------


def _numbers(text: str) -> list[str]:
    return _NUMBER.findall(text)


def extract_answer(continuation: str, kind: str = "arithmetic") -> str | None:
    """The number a continuation answers with (see the module docstring), thousands separators dropped."""
    found: list[str] = []
    if "####" in continuation:
        found = _numbers(continuation.split("####", 1)[1])[:1]
    if not found:
        lowered = continuation.lower()
        at = lowered.rfind("answer is")
        if at >= 0:
            found = _numbers(continuation[at:])[:1]
    if not found and kind != "word_problem" and "=" in continuation:
        found = _numbers(continuation.rsplit("=", 1)[1])[:1]
    if not found:
        numbers = _numbers(continuation)
        found = numbers[-1:] if kind == "word_problem" else numbers[:1]
    return found[0].replace(",", "") if found else None


def answers_match(predicted: str | None, answer: str) -> bool:
    """Whether two numbers are equal as numbers ("1,078" and "1078.0" are)."""
    if predicted is None:
        return False
    try:
        return Fraction(predicted.replace(",", "")) == Fraction(str(answer).replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return False


def math_prompt(item: Mapping[str, Any], prompt_format: str) -> tuple[str, int, re.Pattern[str] | None]:
    """(prompt, max new tokens, stop pattern) of one math item in `prompt_format` ("base" or "chat")."""
    question = str(item["question"])
    if prompt_format == "chat":
        # the chat format SFT trains on, bos included (both tokenizers' bos and eos are <|endoftext|>)
        prompt = render([{"role": "user", "content": question}], CHAT_BOS, CHAT_BOS, add_generation_prompt=True)
        return prompt, WORD_PROBLEM_NEW_TOKENS, AFTER_ANSWER_LINE
    if prompt_format != "base":
        raise EvalError(f"unknown prompt format {prompt_format!r}: choose {' or '.join(PROMPT_FORMATS)}")
    if item.get("kind") == "word_problem":
        return f"{question}\n", WORD_PROBLEM_NEW_TOKENS, AFTER_ANSWER_LINE
    return f"{question} ", ARITHMETIC_NEW_TOKENS, NEWLINE


def math_accuracy(model: Transformer | None, tokenizer: Tokenizer | None, items: Sequence[Mapping[str, Any]],
                  prompt_format: str = "base", *, generate: Generate | None = None,
                  batch_size: int = 128) -> tuple[float, list[dict[str, Any]]]:
    """Exact-match accuracy of greedy answers to math items {"id", "question", "answer", "kind"}.

    Items are grouped by (max new tokens, stop) and each group decoded in batches. `generate`
    replaces the model (tests): called as generate(prompts, max_new_tokens, stop).
    Returns (accuracy, one dict per item: id, kind, answer, continuation, predicted, correct).
    """
    if generate is None:
        if model is None or tokenizer is None:
            raise ValueError("math_accuracy needs a model and tokenizer, or `generate`")

        def generate(prompts: Sequence[str], max_new: int, stop: re.Pattern[str] | None) -> list[str]:
            return greedy_answers(model, tokenizer, prompts, max_new, stop=stop, batch_size=batch_size)

    specs = [math_prompt(item, prompt_format) for item in items]
    continuations: list[str] = [""] * len(items)
    groups: dict[tuple[int, str | None], list[int]] = {}
    for i, (_, max_new, stop) in enumerate(specs):
        groups.setdefault((max_new, stop.pattern if stop is not None else None), []).append(i)
    for indices in groups.values():
        _, max_new, stop = specs[indices[0]]
        for i, text in zip(indices, generate([specs[i][0] for i in indices], max_new, stop), strict=True):
            continuations[i] = text
    details: list[dict[str, Any]] = []
    for item, text in zip(items, continuations, strict=True):
        kind = str(item.get("kind", "arithmetic"))
        predicted = extract_answer(text, kind)
        details.append({"id": item.get("id"), "kind": kind, "answer": str(item["answer"]), "continuation": text,
                        "predicted": predicted, "correct": answers_match(predicted, str(item["answer"]))})
    correct = sum(d["correct"] for d in details)
    return (correct / len(details) if details else 0.0), details


# --- a checkpoint, a stage ----------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalDataError(f"{path} not found: build the demo corpus there "
                            "(`olmo2spec demo-data DATA_ROOT`)") from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _math_summary(accuracy: float, details: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({d["kind"] for d in details}):
        rows = [d for d in details if d["kind"] == kind]
        hits = sum(d["correct"] for d in rows)
        by_kind[kind] = {"accuracy": hits / len(rows), "correct": hits, "n": len(rows)}
    return {"accuracy": accuracy, "correct": sum(d["correct"] for d in details), "n": len(details),
            "by_kind": by_kind}


def evaluate_checkpoint(plan: Plan | None, checkpoint_dir: Path, data_root: Path, limit: int | None = None, *,
                        tasks: Sequence[str] = DEMO_TASKS, prompt_format: str = "base",
                        device: str | torch.device = "cpu", details: bool = False) -> dict[str, Any]:
    """The demo suite on one checkpoint (a step directory, or a run directory's final checkpoint).

    Args:
        plan: the plan it was trained with; None: the plan the step carries.
        data_root: the demo corpus (its `eval/` files).
        limit: evaluate only the first `limit` items of each math split (all held-out text still).
        tasks: which of `DEMO_TASKS`.
        details: also return every math answer under "details" (task -> list).

    Returns:
        {"checkpoint", "step", "prompt_format", "seconds", "task_seconds", "demo-heldout-loss": {source: nats/token},
        "demo-math-dev" / "demo-math-heldout": {"accuracy", "correct", "n", "by_kind"}, ["details"]}.

    Raises:
        EvalError: a missing checkpoint or eval file, an unknown task or prompt format.
    """
    unknown = [t for t in tasks if t not in DEMO_TASKS]
    if unknown:
        raise EvalError(f"unknown demo task {unknown[0]!r} (known: {', '.join(DEMO_TASKS)})")
    if prompt_format not in PROMPT_FORMATS:
        raise EvalError(f"unknown prompt format {prompt_format!r}: choose {' or '.join(PROMPT_FORMATS)}")
    from olmo2spec.data.tokenizer import load_tokenizer

    start = time.perf_counter()
    path, plan = _resolve(Path(checkpoint_dir), plan)
    model = load_model(plan, path, device)
    tokenizer = load_tokenizer(plan.tokenizer.name)
    result: dict[str, Any] = {"checkpoint": str(path), "step": read_marker(path).get("step"),
                              "prompt_format": prompt_format}
    all_details: dict[str, list[dict[str, Any]]] = {}
    task_seconds: dict[str, float] = {}
    for task in tasks:
        task_start = time.perf_counter()
        if task == "demo-heldout-loss":
            docs: dict[str, list[str]] = {}
            for record in _read_jsonl(Path(data_root) / HELDOUT_TEXT):
                docs.setdefault(str(record.get("source", "text")), []).append(str(record["text"]))
            result[task] = heldout_loss(model, tokenizer, docs, plan.model.max_seq_len)
        else:
            items = _read_jsonl(Path(data_root) / MATH_FILES[task])[:limit]
            accuracy, rows = math_accuracy(model, tokenizer, items, prompt_format)
            result[task] = _math_summary(accuracy, rows)
            all_details[task] = rows
        task_seconds[task] = round(time.perf_counter() - task_start, 2)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["task_seconds"] = task_seconds
    if details:
        result["details"] = all_details
    return result


def _producer(plan: Plan, run: str) -> str | None:
    """The kind of the stage whose run (or output) `run` is; None when no stage makes it."""
    for stage in plan.stages:
        if isinstance(stage, TrainStagePlan) and run in [r.name for r in stage.runs]:
            return stage.kind
        if isinstance(stage, SoupStagePlan | PostTrainStagePlan) and stage.name == run:
            return stage.kind
    return None


def _eval_device(plan: Plan) -> str:
    return "cuda" if wanted_device(plan) == "cuda" and torch.cuda.is_available() else "cpu"


def _table(rows: list[tuple[str, dict[str, Any]]], dev: Sequence[str], heldout: Sequence[str]) -> str:
    """One line per target: dev tasks, then held-out tasks, marked apart."""
    header = ["target"]
    for split, tasks in (("dev", dev), ("held-out", heldout)):
        for task in tasks:
            if task == "demo-heldout-loss":
                sources = sorted({s for _, r in rows for s in r.get(task, {})})
                header += [f"{split}: loss {s}" for s in sources]
            else:
                header.append(f"{split}: {task}")
    lines = [header]
    for target, r in rows:
        cells = [target]
        for task in [*dev, *heldout]:
            if task == "demo-heldout-loss":
                sources = sorted({s for _, rr in rows for s in rr.get(task, {})})
                cells += [f"{r[task][s]:.3f}" if s in r.get(task, {}) else "-" for s in sources]
            else:
                m = r[task]
                cells.append(f"{100 * m['accuracy']:.1f}% ({m['correct']}/{m['n']})")
        lines.append(cells)
    return render_grid(header, lines[1:])


def _run_demo(ctx: RunContext, stage: EvalStagePlan) -> int:
    from olmo2spec.data.sources import data_root

    root = data_root(None, ctx.plan.data.root)
    if root is None:
        print(f"eval {stage.name}: DATA_ROOT is not set: export DATA_ROOT=/path/to/data (where the demo corpus's "
              f"eval/ files are), or set [data] root in the recipe", file=sys.stderr)
        return ExitCode.DATA
    device = _eval_device(ctx.plan)
    rows: list[tuple[str, dict[str, Any]]] = []
    for target in stage.targets:
        producer = _producer(ctx.plan, target)
        fmt = "chat" if producer is not None and stage_kind(producer).chat_model else "base"
        try:
            checkpoint = final_step(ctx.checkpoint_root / target)
            result = evaluate_checkpoint(ctx.plan, checkpoint, root, tasks=[*stage.dev_tasks, *stage.heldout_tasks],
                                         prompt_format=fmt, device=device, details=True)
        except (CheckpointError, EvalError) as exc:
            print(f"eval {stage.name}: {target}: {exc}", file=sys.stderr)
            return ExitCode(exc.exit_code) if isinstance(exc, EvalError) else ExitCode.CHECKPOINT
        out = ctx.checkpoint_root / stage.name / target
        for task, items in result.pop("details").items():
            write_json_atomic(out / f"{task}.json", items, sort_keys=True, parents=True)
        report = {"stage": stage.name, "suite": stage.suite, "target": target, **{
            k: result[k] for k in ("checkpoint", "step", "prompt_format", "seconds", "task_seconds")},
            "dev": {t: result[t] for t in stage.dev_tasks}, "heldout": {t: result[t] for t in stage.heldout_tasks}}
        write_json_atomic(out / "results.json", report, sort_keys=True, parents=True)
        print(f"eval {stage.name}: {target} ({checkpoint}, {fmt} prompts) in {result['seconds']:.1f} s: "
              f"{out / 'results.json'}", flush=True)
        rows.append((target, result))
    print(_table(rows, stage.dev_tasks, stage.heldout_tasks), flush=True)
    print("dev tasks may guide decisions; held-out tasks are for reporting only (paper, section 2.5)", flush=True)
    return 0


def _run_olmes(ctx: RunContext, stage: EvalStagePlan) -> int:
    from olmo2spec.runtime.export_hf import ExportError, export_hf

    for target in stage.targets:
        out = ctx.checkpoint_root / target / "hf"
        try:
            checkpoint = final_step(ctx.checkpoint_root / target)
            export_hf(checkpoint, ctx.plan, out)
        except (CheckpointError, ExportError) as exc:  # a missing or damaged checkpoint, one of another model
            print(f"eval {stage.name}: {target}: {exc}", file=sys.stderr)
            return ExitCode.CHECKPOINT
        print(f"eval {stage.name}: exported {target} ({checkpoint}) to {out}", flush=True)
    script = ctx.bundle / "eval" / "olmes.sh"
    command = ["bash", str(script), stage.name]
    if shutil.which("olmes") is None:
        print(f"eval {stage.name}: OLMES is not installed here (`pip install ai2-olmes`); run the suite with:\n"
              f"  CHECKPOINT_ROOT={ctx.checkpoint_root} {' '.join(command)}", flush=True)
        return 0
    env = {**os.environ, "CHECKPOINT_ROOT": str(ctx.checkpoint_root)}
    return subprocess.run(command, env=env, check=False).returncode


def run_eval_stage(ctx: RunContext) -> int:
    """The runner of eval stages: the demo suite in process, OLMES suites through a Hugging Face export."""
    stage = ctx.stage
    assert isinstance(stage, EvalStagePlan)
    if stage.suite == "demo":
        return _run_demo(ctx, stage)
    return _run_olmes(ctx, stage)
