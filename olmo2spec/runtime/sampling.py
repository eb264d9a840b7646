"""Batched sampling for RLVR from the one Transformer, with its KVCache: all rows in one cached decode.

Prompts are left-padded into one batch; each decode step is one forward of the still-running rows'
new token. A row stops at eos (kept as its last response token) or after `max_new_tokens`;
finished rows leave the cache, so the batch shrinks as they do. Temperature 0 is greedy.

Sampling is the Gumbel-max trick with exponential noise: the token is argmax(log p - log E), E ~
Exp(1) per vocabulary entry, which draws from p exactly. The noise of a step is drawn for every
row of the *global* batch from one generator seeded by (seed, step) and each row takes its own
row of it, so a row's tokens depend on its global index alone, not on which rank decodes it or
with which others: 2 processes sample what 1 does, and a resumed run what it sampled before.

Log-probs are of the tempered distribution softmax(logits / temperature) with the ids the model
may not emit (the embedding's padding rows, the pad id) removed, as the policy's training
forward computes them (`token_logps`), so the two agree to rounding.
"""

from __future__ import annotations

import attrs
import torch

from olmo2spec.runtime.evaluate import decode_threads
from olmo2spec.runtime.model import KVCache, Transformer

__all__ = ["Samples", "sample", "token_logps", "banned_ids", "sampling_generator", "left_padded", "episode_inputs",
           "response_slots", "response_logits"]


@attrs.frozen
class Samples:
    responses: torch.Tensor
    """(B, R) long: each row's response (its eos last if it emitted one), then `pad`; R <= max_new_tokens."""
    mask: torch.Tensor
    """(B, R) bool: True on response tokens."""
    eos: torch.Tensor
    """(B,) bool: the row emitted eos."""
    logps: torch.Tensor
    """(B, R) float32: the sampling log-prob of each response token (0 on padding)."""


def banned_ids(rows: int, vocab_size: int, pad_id: int, device: torch.device | None = None) -> torch.Tensor:
    """(rows,) bool: the ids never sampled nor scored: embedding rows past the vocabulary, and the pad id."""
    banned = torch.zeros(rows, dtype=torch.bool, device=device)
    banned[vocab_size:] = True
    banned[pad_id] = True
    return banned


def sampling_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of a step's sampling noise: the same on every rank, and on a resume."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) % (2 ** 63))
    return generator


def _tempered_logps(logits: torch.Tensor, temperature: float, banned: torch.Tensor, in_place: bool = False
                    ) -> torch.Tensor:
    """log_softmax(logits / temperature) over the ids that may be emitted, in fp32: one full-vocabulary copy
    (the result), and one more unless `in_place` lets it scale `logits` itself (when they are fp32)."""
    scaled = logits.float()
    if scaled is logits and not in_place:
        scaled = scaled.clone()
    if temperature > 0:
        scaled.div_(temperature)
    return scaled.masked_fill_(banned, float("-inf")).log_softmax(dim=-1)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, banned: torch.Tensor, *,
                in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (B, T) of `tokens` under `logits` (B, T, V), and the distributions' entropies (B, T, no grad).

    in_place: `logits` are the caller's to overwrite (a fresh forward's): saves a full-vocabulary copy.
    """
    logps = _tempered_logps(logits, temperature, banned, in_place)
    picked = logps.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():  # a metric: no graph; entr(0) = 0 for the banned ids
        entropy = torch.special.entr(logps.exp()).sum(-1)
    return picked, entropy


def left_padded(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) prompt ids padded on the left with `pad_id`, and (B,) each row's padding count."""
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
    pads = torch.tensor([width - len(p) for p in prompts])
    return tokens.to(device), pads.to(device)


def episode_inputs(prompts: list[list[int]], responses: torch.Tensor, pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole episodes for a training forward: tokens (B, P + R) and (B,) where each row's response is predicted.

    Row i is its prompt, its response's R slots right after it, then `pad_id`: padding only at the
    end, so plain causal attention (no mask: flash kernels on GPUs) gives every real token what the
    sampling cache gave it, at the same positions. starts[i] = len(prompt i) - 1, the slot whose
    logits predict the response's first token.
    """
    width = max(len(p) for p in prompts) + responses.shape[1]
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = torch.tensor(p, dtype=torch.long)
    tokens = tokens.to(responses.device)
    starts = torch.tensor([len(p) - 1 for p in prompts], device=responses.device)
    slots = starts.unsqueeze(1) + 1 + torch.arange(responses.shape[1], device=responses.device)
    tokens.scatter_(1, slots, responses)
    return tokens, starts


def response_slots(starts: torch.Tensor, width: int) -> torch.Tensor:
    """(B, R): the slots whose outputs predict each response token."""
    return starts.unsqueeze(1) + torch.arange(width, device=starts.device)


def response_logits(model: torch.nn.Module, tokens: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """(B, R, V): the logits that predict each of the `width` response tokens (the last prompt token's onwards)."""
    logits: torch.Tensor = model(tokens)
    slots = response_slots(starts, width).unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return logits.gather(1, slots)


@torch.no_grad()  # the KVCache is written in place: sampling never records a graph
def sample(model: Transformer, prompts: list[list[int]], *, max_new_tokens: int, eos_id: int, pad_id: int,
           temperature: float, banned: torch.Tensor, generator: torch.Generator | None = None,
           rows: list[int] | None = None, global_rows: int | None = None) -> Samples:
    """Sample a response to each prompt (token ids, non-empty).

    rows / global_rows: the prompts' indices in the global batch and its size (default: this batch
    is the global one); row i's noise is row rows[i] of each step's global draw.
    """
    device = next(model.parameters()).device
    with decode_threads(device, len(prompts) * model.args.d_model * model.args.mlp_hidden):
        return _sample(model, prompts, max_new_tokens, eos_id, pad_id, temperature, banned, generator, rows,
                       global_rows)


def _sample(model: Transformer, prompts: list[list[int]], max_new_tokens: int, eos_id: int, pad_id: int,
            temperature: float, banned: torch.Tensor, generator: torch.Generator | None, rows: list[int] | None,
            global_rows: int | None) -> Samples:
    device = next(model.parameters()).device
    B = len(prompts)
    rows = list(range(B)) if rows is None else rows
    global_rows = B if global_rows is None else global_rows
    tokens, pads = left_padded(prompts, pad_id, device)
    cache = KVCache(model.args, pads, tokens.shape[1] + max_new_tokens)
    responses = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros((B, max_new_tokens), dtype=torch.float32, device=device)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
    emitted = torch.zeros(B, dtype=torch.bool, device=device)
    alive = torch.arange(B, device=device)  # batch row of each row still in the cache
    noise_rows = torch.tensor(rows, device=device)
    logits = model(tokens, cache=cache, last_only=True)  # (B, V)
    for t in range(max_new_tokens):
        step_logps = _tempered_logps(logits, temperature, banned, in_place=True)
        if temperature > 0:
            noise = torch.empty((global_rows, step_logps.shape[-1]), device=device)
            noise.exponential_(generator=generator)
            nxt = (step_logps - noise[noise_rows[alive]].log()).argmax(dim=-1)
        else:
            nxt = step_logps.argmax(dim=-1)
        responses[alive, t] = nxt
        logps[alive, t] = step_logps.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
        ended = nxt == eos_id
        if bool(ended.any()):
            lengths[alive[ended]] = t + 1
            emitted[alive[ended]] = True
            keep = (~ended).nonzero().squeeze(-1)
            alive, nxt = alive[keep], nxt[keep]
            if alive.numel() == 0:
                break
            cache.keep(keep)
        if t + 1 == max_new_tokens:
            break
        logits = model(nxt.unsqueeze(1), cache=cache, last_only=True)
    width = int(lengths.max()) if B else 0
    mask = torch.arange(width, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    return Samples(responses=responses[:, :width].masked_fill(~mask, pad_id), mask=mask, eos=emitted,
                   logps=logps[:, :width] * mask)
