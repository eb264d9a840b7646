"""Loader tokens/s against the tokens/s a training step of the tiny recipe consumes, same run.

The issue's bar: the loader (memory-mapped reads, global shuffle, n-gram masking) must feed at
least 20x what training consumes on this machine. The training step is a stand-in with the
tiny recipe's shapes (d_model 256, 4 layers, 4 heads, MLP 768, 384-row head, seq 256, batch 16,
fp32, AdamW, all threads) until the runtime's own model replaces it. Medians of 5 rounds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from olmo2spec.data.loader import MixtureLoader, SourceShare
from olmo2spec.data.tokenfile import write_token_file

SEQ, BATCH, VOCAB = 256, 16, 258
ROUNDS = 5


def make_sources(root: Path) -> list[SourceShare]:
    """Token files of the tiny recipe's sizes: 2M web, 1M code, 0.5M math tokens."""
    rng = np.random.default_rng(0)
    shares = []
    for name, tokens, repeats in (("web", 2_000_000, 1.0), ("code", 1_000_000, 1.0), ("math", 500_000, 2.0)):
        files = []
        for i in range(4):
            path = root / name / f"{i:03d}.npy"
            docs = [rng.integers(0, 256, size=n) for n in rng.integers(200, 3000, size=tokens // 4 // 1600)]
            write_token_file(path, docs, eos_id=256)
            files.append(path)
        shares.append(SourceShare(name, files, repeats))
    return shares


def loader_tokens_per_second(shares: list[SourceShare]) -> float:
    loader = MixtureLoader(shares, seq_len=SEQ, global_batch=BATCH, seed=1234)
    steps = 400
    start = time.perf_counter()
    for batch in loader.batches(0, steps):
        batch.tokens.sum()  # touch the data
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def train_tokens_per_second() -> float:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 4, 768, dropout=0.0, batch_first=True, norm_first=True)
    body = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
    model = nn.ModuleDict({"emb": nn.Embedding(384, 256), "body": body, "head": nn.Linear(256, 384, bias=False)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mask = nn.Transformer.generate_square_subsequent_mask(SEQ)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))

    def step() -> None:
        logits = model["head"](model["body"](model["emb"](tokens), mask=mask, is_causal=True))
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 384), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    steps = 5
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shares = make_sources(Path(tmp))
        ours, base = [], []
        for _ in range(ROUNDS):
            ours.append(loader_tokens_per_second(shares))
            base.append(train_tokens_per_second())
    o, b = statistics.median(ours), statistics.median(base)
    print(f"loader (seq {SEQ}, batch {BATCH}, masking on): median {o:,.0f} tokens/s")
    print(f"tiny train step (stand-in, fp32, CPU):   median {b:,.0f} tokens/s")
    print(f"loader feeds {o / b:,.0f}x what training consumes (the bar is 20x)")
    print(f"bench data: ours={o:.0f} tokens/s baseline={b:.0f} tokens/s ratio={o / b:.1f}")


if __name__ == "__main__":
    main()
