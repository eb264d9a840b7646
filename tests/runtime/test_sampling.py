"""RLVR's sampler: greedy it decodes what evaluation's greedy decoder does; its log-probs are a full
forward's; the same seed samples the same, whatever the rows around; eos ends a row."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from olmo2spec.data.tokenizer import load_tokenizer  # noqa: E402
from olmo2spec.runtime.evaluate import greedy_answers  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402
from olmo2spec.runtime.sampling import (  # noqa: E402
    Samples,
    banned_ids,
    episode_inputs,
    response_logits,
    sample,
    sampling_generator,
    token_logps,
)

TOKENIZER = load_tokenizer("bytes")
EOS, PAD = TOKENIZER.eos_id, TOKENIZER.pad_id
PROMPTS = ["<|endoftext|><|user|>\nWhat is 2 + 3?\n<|assistant|>\n", "<|endoftext|>Hi", "<|endoftext|>12 + 7 ="]


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    m = Transformer(ModelArgs(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128, vocab_rows=384,
                              max_seq_len=128, rope_theta=10_000.0))
    m.init_weights()
    with torch.no_grad():  # a less uniform model: sharper distributions, eos reachable
        m.lm_head.weight.mul_(40)
    return m.eval()


def _ids() -> list[list[int]]:
    return [TOKENIZER.encode(p, allow_special=True) for p in PROMPTS]


def _banned() -> torch.Tensor:
    return banned_ids(384, TOKENIZER.vocab_size, PAD)


def _sample(model: Transformer, prompts: list[list[int]], seed: int = 1, **kw) -> Samples:  # type: ignore[no-untyped-def]
    return sample(model, prompts, max_new_tokens=24, eos_id=EOS, pad_id=PAD, temperature=kw.pop("temperature", 1.0),
                  banned=_banned(), generator=sampling_generator(seed, 0, torch.device("cpu")), **kw)


def test_greedy_is_the_evaluation_decoder(model: Transformer) -> None:
    out = _sample(model, _ids(), temperature=0.0)
    texts = []
    for row, mask, eos in zip(out.responses, out.mask, out.eos, strict=True):
        ids = row[mask].tolist()
        texts.append(TOKENIZER.decode(ids[:-1] if eos else ids))
    assert texts == greedy_answers(model, TOKENIZER, PROMPTS, 24, stop=None)


def test_sampling_log_probs_are_a_full_forwards(model: Transformer) -> None:
    out = _sample(model, _ids(), temperature=0.7)
    tokens, starts = episode_inputs(_ids(), out.responses, PAD)  # right after each prompt, no mask
    with torch.no_grad():
        logits = response_logits(model, tokens, starts, out.responses.shape[1])
    logps, entropy = token_logps(logits, out.responses, 0.7, _banned())
    mask = out.mask
    assert mask.sum() > len(PROMPTS)
    assert torch.allclose(logps * mask, out.logps, atol=1e-5)
    assert (entropy[mask] > 0).all()


def test_the_same_seed_samples_the_same_and_a_row_does_not_depend_on_its_neighbours(model: Transformer) -> None:
    ids = _ids()
    a, b, c = _sample(model, ids), _sample(model, ids), _sample(model, ids, seed=2)
    assert torch.equal(a.responses, b.responses)
    assert not torch.equal(a.responses, c.responses)
    # row 1 alone, told it is row 1 of a global batch of 3 (another rank's share): the same tokens
    alone = _sample(model, [ids[1]], rows=[1], global_rows=3)
    n = int(alone.mask.sum())
    assert torch.equal(alone.responses[0, :n], a.responses[1, :n])
    assert n == int(a.mask[1].sum())


def test_eos_ends_a_row(model: Transformer) -> None:
    """Greedy decoding with the token row 0 emits 4th as eos: row 0 stops at its first one, padded after."""
    free = _sample(model, _ids(), temperature=0.0)
    stop = int(free.responses[0, 3])
    first = free.responses[0].tolist().index(stop)
    out = sample(model, _ids(), max_new_tokens=24, eos_id=stop, pad_id=PAD, temperature=0.0, banned=_banned())
    assert bool(out.eos[0]) and int(out.mask[0].sum()) == first + 1
    assert out.responses[0, first] == stop and (out.responses[0, first + 1:] == PAD).all()
    assert torch.equal(out.responses[0, :first + 1], free.responses[0, :first + 1])
    for row, mask, eos in zip(out.responses, out.mask, out.eos, strict=True):
        n = int(mask.sum())
        assert bool(eos) == (row[n - 1] == stop) and (n == 24 or bool(eos))
