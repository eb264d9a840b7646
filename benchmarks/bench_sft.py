"""Tiny-recipe SFT step, conversation tokens/s: our packed step against transformers' padded one, same run.

The data is the demo chat set (`olmo2spec demo-data`, written to a temporary directory) in the Tulu
chat format, the tiny recipe's SFT shapes (batches of 16 conversations, max_seq_len 256), fp32,
the same threads, AdamW. Ours: the SFT runner's batches (conversations packed without padding into
rows of 256 tokens, a block-diagonal causal mask, the `sum` loss) through our Transformer. The
baseline: transformers' Olmo2ForCausalLM (SDPA) on the same conversations padded to the batch's
longest, with an attention mask and labels on the assistant tokens, as a trainer without packing
(TRL's SFTTrainer's default) runs it. Both count the conversations' tokens (padding is not work
done); each step a forward, a backward and an optimizer step. Rounds alternate; medians.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from olmo2spec.compiler import check
from olmo2spec.data.chat import chat_file, read_chat_file
from olmo2spec.data.demo import build_demo_corpus
from olmo2spec.data.sft_batches import IGNORE, SftBatches
from olmo2spec.data.tokenizer import load_tokenizer
from olmo2spec.plan.plan import Plan
from olmo2spec.runtime.export_hf import hf_config
from olmo2spec.runtime.loss import weighted_ce
from olmo2spec.runtime.model import ModelArgs, Transformer

ROOT = Path(__file__).resolve().parent.parent
BATCH, SEQ, STEPS, ROUNDS, EXAMPLES = 16, 256, 6, 5, 16 * 6

Step = Callable[[int], None]


def _adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)


def ours(plan: Plan, batches: SftBatches) -> Step:
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    optimizer = _adamw(model)
    ready = []
    for s in range(batches.steps):
        b = batches.batch(s)
        ready.append([torch.from_numpy(a) for a in (b.tokens, b.labels, b.positions, b.doc_ids, b.weights)])

    def step(i: int) -> None:
        tokens, labels, positions, doc_ids, weights = ready[i]
        weighted_ce(model(tokens, positions=positions, doc_ids=doc_ids), labels, weights).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def theirs(plan: Plan, batches: SftBatches, pad_id: int) -> Step:
    from transformers import Olmo2Config, Olmo2ForCausalLM

    config = {k: v for k, v in hf_config(plan).items() if k not in ("architectures", "model_type")}
    model = Olmo2ForCausalLM(Olmo2Config(**config)).float()
    model.config._attn_implementation = "sdpa"
    optimizer = _adamw(model)
    ready = []
    for s in range(batches.steps):
        chosen = batches.step_examples(s)
        longest = int(batches.lengths[chosen].max())
        ids = np.full((len(chosen), longest), pad_id, dtype=np.int64)
        labels = np.full((len(chosen), longest), IGNORE, dtype=np.int64)
        mask = np.zeros((len(chosen), longest), dtype=np.int64)
        for row, i in enumerate(chosen):
            tokens, shifted = batches.examples[i]  # shifted: label of position t is token t+1
            ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1
            labels[row, 1:len(tokens)] = shifted[:-1]  # transformers shifts labels itself
        ready.append([torch.from_numpy(a) for a in (ids, labels, mask)])

    def step(i: int) -> None:
        ids, labels, mask = ready[i]
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tokens_per_second(step: Step, batches: SftBatches) -> float:
    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(batches.steps):
        step(i)
    return batches.tokens_before(batches.steps) / (time.perf_counter() - start)


def main() -> None:
    torch.manual_seed(0)
    plan = check(ROOT / "specs" / "tiny.toml").plan
    tokenizer = load_tokenizer(plan.tokenizer.name)
    with tempfile.TemporaryDirectory() as tmp:
        build_demo_corpus(Path(tmp) / "data")
        examples = read_chat_file(chat_file(Path(tmp) / "data", "demo-chat"), tokenizer, limit=EXAMPLES)
    batches = SftBatches(examples, batch_size=BATCH, epochs=1, seq_len=SEQ, seed=0, loss="sum",
                         pad_id=tokenizer.pad_id, micro_rows=BATCH)
    ours_step, theirs_step = ours(plan, batches), theirs(plan, batches, tokenizer.pad_id)
    a, b = [], []
    for _ in range(ROUNDS):
        a.append(tokens_per_second(ours_step, batches))
        b.append(tokens_per_second(theirs_step, batches))
    o, t = statistics.median(a), statistics.median(b)
    rows = batches.batch(0).tokens.shape[0]
    print(f"threads {torch.get_num_threads()}, {batches.steps} steps of {BATCH} demo conversations "
          f"(~{batches.tokens_before(1)} tokens; ours packed into {rows} rows of {SEQ}), fp32, AdamW, {ROUNDS} rounds")
    print(f"olmo2spec sft (packed):                 median {o:,.0f} tokens/s")
    print(f"transformers Olmo2ForCausalLM (padded): median {t:,.0f} tokens/s")
    print(f"bench sft: ours={o:.0f} tokens/s baseline={t:.0f} tokens/s ratio={o / t:.3f}")


if __name__ == "__main__":
    main()
