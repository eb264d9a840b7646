"""Eval generation tokens/s on the tiny model: the cached decode against recomputing the whole forward.

Same model (specs/tiny.toml: d_model 128, 4 layers, 384 rows, a random init with noise so that
it never stops early), same prompts (math questions of 20 to 60 bytes, eval's batch of them),
same greedy decoding of a fixed number of new tokens, one thread, fp32:
  ours      olmo2spec.runtime.evaluate.greedy_answers: prompts left-padded, one prefill, then one
            token at a time against the model's key/value cache
  baseline  the same batch right-padded, the model's full forward over every token so far at each
            step, each row's next token read at its own last position (no cache)
Rounds alternate between the two; medians. Both must produce the same continuations (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from olmo2spec.compiler import check
from olmo2spec.data.tokenizer import Tokenizer, load_tokenizer
from olmo2spec.runtime.evaluate import greedy_answers
from olmo2spec.runtime.model import ModelArgs, Transformer

ROOT = Path(__file__).resolve().parent.parent


def tiny_model(noise: float = 0.3) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(check(ROOT / "specs" / "tiny.toml").plan))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model.eval()


def prompts(n: int) -> list[str]:
    """Math questions in the demo corpus's phrasings, 20 to 60 bytes."""
    forms = ["What is {a} times {b}?", "Add {a} and {b}.", "Divide {c} by {b}.",
             "Sam earns {a} dollars per hour and works {b} hours a day. How many?"]
    return [forms[i % len(forms)].format(a=17 + 7 * i, b=3 + i % 11, c=(3 + i % 11) * (5 + i)) for i in range(n)]


@torch.no_grad()
def uncached_greedy(model: Transformer, tokenizer: Tokenizer, texts: list[str], new_tokens: int) -> list[str]:
    """Greedy decoding by the full forward at every step, batched: rows right-padded, read at their own ends."""
    encoded = [tokenizer.encode(t) for t in texts]
    lengths = torch.tensor([len(e) for e in encoded])
    tokens = torch.full((len(encoded), int(lengths.max()) + new_tokens), tokenizer.pad_id, dtype=torch.long)
    for i, e in enumerate(encoded):
        tokens[i, : len(e)] = torch.tensor(e)
    banned = torch.zeros(model.args.vocab_rows, dtype=torch.bool)
    banned[tokenizer.vocab_size:] = True
    banned[tokenizer.pad_id] = True
    rows = torch.arange(len(encoded))
    for _ in range(new_tokens):
        logits = model(tokens[:, : int(lengths.max())])[rows, lengths - 1]  # causal: the padding after is unseen
        tokens[rows, lengths] = logits.masked_fill(banned, float("-inf")).argmax(dim=-1)
        lengths = lengths + 1
    return [tokenizer.decode(tokens[i, len(e): len(e) + new_tokens].tolist()) for i, e in enumerate(encoded)]


def timed(fn) -> tuple[float, list[str]]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48, help="eval's arithmetic cap (default 48)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer, texts = tiny_model(), load_tokenizer("bytes"), prompts(args.prompts)
    tokens = args.prompts * args.new_tokens

    def ours() -> list[str]:
        # eos never ends a row early: eval stops there, the baseline does not; -1 is no token
        return greedy_answers(model, tokenizer, texts, args.new_tokens, eos=-1, stop=None)

    def baseline() -> list[str]:
        return uncached_greedy(model, tokenizer, texts, args.new_tokens)

    ours()  # warm-up
    a, b, same = [], [], True
    for _ in range(args.rounds):
        seconds, got = timed(ours)
        a.append(tokens / seconds)
        seconds, expected = timed(baseline)
        b.append(tokens / seconds)
        same = same and got == expected
    o, t = statistics.median(a), statistics.median(b)
    print(f"threads 1, {args.prompts} prompts x {args.new_tokens} new tokens, fp32, {args.rounds} rounds")
    print(f"cached greedy_answers:      median {o:,.0f} tokens/s  (rounds: {', '.join(f'{x:,.0f}' for x in a)})")
    print(f"uncached full forward:      median {t:,.0f} tokens/s  (rounds: {', '.join(f'{x:,.0f}' for x in b)})")
    print(f"same continuations: {same}")
    print(f"bench generate: ours={o:.0f} tokens/s baseline={t:.0f} tokens/s ratio={o / t:.2f}")
    if not same:
        sys.exit("FAIL: the cached decode's continuations differ from the uncached forward's")


if __name__ == "__main__":
    main()
