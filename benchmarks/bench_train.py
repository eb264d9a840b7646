"""Tiny-recipe train-step tokens/s: our model against transformers' Olmo2ForCausalLM, same run.

Same shapes (specs/tiny.toml: d_model 256, 4 layers, 4 heads, MLP 768, 384 rows), same batch
(16 x 256), same threads, fp32, AdamW with the recipe's settings, each step a forward, a
backward and an optimizer step. Ours also computes its z-loss; theirs only cross-entropy.
Rounds alternate between the two; medians.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from olmo2spec.compiler import check
from olmo2spec.runtime.export_hf import hf_config
from olmo2spec.runtime.loss import labels_for, loss_sums
from olmo2spec.runtime.model import ModelArgs, Transformer

ROOT = Path(__file__).resolve().parent.parent
BATCH, SEQ, STEPS, ROUNDS = 16, 256, 6, 5


def ours(plan, tokens: torch.Tensor):  # type: ignore[no-untyped-def]
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    labels = labels_for(tokens, torch.ones(BATCH, dtype=torch.bool))

    def step() -> None:
        ce, z, n = loss_sums(model(tokens), labels, plan.optimizer.z_loss)
        ((ce + z) / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def theirs(plan, tokens: torch.Tensor):  # type: ignore[no-untyped-def]
    from transformers import Olmo2Config, Olmo2ForCausalLM

    config = {k: v for k, v in hf_config(plan).items() if k not in ("architectures", "model_type")}
    model = Olmo2ForCausalLM(Olmo2Config(**config)).float()
    model.config._attn_implementation = "sdpa"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

    def step() -> None:
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tokens_per_second(step) -> float:  # type: ignore[no-untyped-def]
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return STEPS * BATCH * SEQ / (time.perf_counter() - start)


def main() -> None:
    torch.manual_seed(0)
    plan = check(ROOT / "specs" / "tiny.toml").plan
    tokens = torch.randint(0, 258, (BATCH, SEQ))
    ours_step, theirs_step = ours(plan, tokens), theirs(plan, tokens)
    a, b = [], []
    for _ in range(ROUNDS):
        a.append(tokens_per_second(ours_step))
        b.append(tokens_per_second(theirs_step))
    o, t = statistics.median(a), statistics.median(b)
    print(f"threads {torch.get_num_threads()}, batch {BATCH} x {SEQ}, fp32, AdamW, {ROUNDS} rounds of {STEPS} steps")
    print(f"olmo2spec Transformer:          median {o:,.0f} tokens/s")
    print(f"transformers Olmo2ForCausalLM:  median {t:,.0f} tokens/s")
    print(f"bench train: ours={o:.0f} tokens/s baseline={t:.0f} tokens/s ratio={o / t:.3f}")


if __name__ == "__main__":
    main()
