"""The model's two forwards: training's (no cache) kept bit for bit, decoding's (a KVCache) equal to it."""

from __future__ import annotations

import attrs
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from olmo2spec.runtime.model import KVCache, ModelArgs, Transformer, apply_rope  # noqa: E402

ARGS = ModelArgs(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=96, vocab_rows=128, max_seq_len=32,
                 rope_theta=10_000.0)
SHAPES = {"reordered, GQA": ARGS, "pre-norm, MHA, no QK-norm": attrs.evolve(ARGS, norm="pre", n_kv_heads=4,
                                                                              qk_norm=False)}


pytestmark = pytest.mark.usefixtures("one_thread")


def noisy_model(args: ModelArgs, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(args)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def pre_cache_forward(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """`Transformer.forward` as it was before the model owned a KV cache (main at e4f8499), verbatim."""
    T = tokens.shape[1]
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x = model.embed_tokens(tokens)
    for block in model.layers:
        attn = block.self_attn

        def attention(x: torch.Tensor, attn=attn) -> torch.Tensor:  # type: ignore[no-untyped-def]
            B, T, C = x.shape
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            if attn.q_norm is not None and attn.k_norm is not None:
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = q.view(B, T, attn.n_heads, attn.head_dim).transpose(1, 2)
            k = k.view(B, T, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
            v = v.view(B, T, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=attn.n_kv_heads != attn.n_heads)
            return attn.o_proj(y.transpose(1, 2).reshape(B, T, C))  # type: ignore[no-any-return]

        if block.reordered:
            h = x + block.post_attention_layernorm(attention(x))
            x = h + block.post_feedforward_layernorm(block.mlp(h))
        else:
            h = x + attention(block.post_attention_layernorm(x))
            x = h + block.mlp(block.post_feedforward_layernorm(h))
    return model.lm_head(model.norm(x))  # type: ignore[no-any-return]


@pytest.mark.parametrize("args", SHAPES.values(), ids=SHAPES.keys())
def test_training_forward_and_grads_are_the_pre_cache_codes_bit_for_bit(args):
    model = noisy_model(args)
    tokens = torch.randint(0, args.vocab_rows, (3, args.max_seq_len))
    logits = model(tokens)
    expected = pre_cache_forward(model, tokens)
    assert torch.equal(logits, expected)
    grads = torch.autograd.grad(logits.square().mean(), list(model.parameters()))
    expected_grads = torch.autograd.grad(expected.square().mean(), list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads, strict=True))


def left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(map(len, rows))
    tokens = torch.full((len(rows), L), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, L - len(r):] = torch.tensor(r)
    return tokens, torch.tensor([L - len(r) for r in rows])


@pytest.mark.parametrize("args", SHAPES.values(), ids=SHAPES.keys())
def test_cached_decoding_of_padded_prompts_equals_the_full_forward_of_each_row_at_every_step(args):
    """Greedy with a cache, prompts of different lengths in one batch, == argmax of the uncached forward."""
    model = noisy_model(args, seed=1).eval()
    torch.manual_seed(2)
    rows = [torch.randint(0, 100, (n,)).tolist() for n in (5, 1, 11, 3)]
    tokens, pads = left_padded(rows, pad=127)
    new = 12
    cache = KVCache(args, pads, tokens.shape[1] + new)
    with torch.no_grad():
        logits = model(tokens, cache=cache, last_only=True)
        for _ in range(new):
            nxt = logits.argmax(-1)
            for i, (row, token) in enumerate(zip(rows, nxt.tolist(), strict=True)):
                full = model(torch.tensor([row]))[0, -1]  # no cache, no padding
                assert int(full.argmax()) == token
                torch.testing.assert_close(logits[i], full, rtol=1e-4, atol=1e-4)
                row.append(token)
            logits = model(nxt.unsqueeze(1), cache=cache, last_only=True)
    assert cache.length == tokens.shape[1] + new


def test_rows_leave_the_cache_and_the_rest_decode_on_unchanged():
    model = noisy_model(ARGS, seed=3).eval()
    rows = [[5, 6, 7, 8], [9], [10, 11]]
    tokens, pads = left_padded(rows, pad=127)
    with torch.no_grad():
        both = KVCache(ARGS, pads, 8)
        model(tokens, cache=both)
        both.keep(torch.tensor([0, 2]))
        kept = model(torch.tensor([[1], [2]]), cache=both, last_only=True)
        alone = KVCache(ARGS, pads[[0, 2]], 8)
        model(tokens[[0, 2]], cache=alone)
        expected = model(torch.tensor([[1], [2]]), cache=alone, last_only=True)
    torch.testing.assert_close(kept, expected)


def test_past_the_window_a_token_sees_the_last_max_seq_len_tokens():
    """Sliding: logits of the cached decode == the uncached forward of the last `max_seq_len` tokens.

    One layer: deeper layers' cached keys also carry what their tokens saw, beyond the window.
    """
    args = attrs.evolve(ARGS, max_seq_len=8, n_layers=1)
    model = noisy_model(args, seed=4).eval()
    sequence = torch.randint(0, 100, (1, 20))
    cache = KVCache(args, torch.tensor([0]), 20)
    with torch.no_grad():
        model(sequence[:, :8], cache=cache)
        for t in range(8, 20):
            got = model(sequence[:, t:t + 1], cache=cache, last_only=True)[0]
            window = sequence[:, t - 7:t + 1]  # positions differ, attention is relative: same logits
            torch.testing.assert_close(got, model(window)[0, -1], rtol=1e-4, atol=1e-4)


def test_a_full_cache_refuses_more_tokens():
    model = noisy_model(ARGS)
    cache = KVCache(ARGS, torch.tensor([0]), 4)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache=cache)
        with pytest.raises(ValueError, match="holds 4 tokens per row: 3 written, 2 more do not fit"):
            model(torch.tensor([[4, 5]]), cache=cache)



def test_init_reaches_every_block_inside_checkpoint_and_compile_wrappers_with_the_same_draws():
    """The trainer initialises after parallelism wrapped the blocks: the same weights as without wrappers."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    from olmo2spec.runtime.parallelize import _compiled

    plain, wrapped = Transformer(ARGS), Transformer(ARGS)  # constructed from different draws
    # as apply_parallelism wraps them; compiling is lazy (at the first forward), so this runs on any CPU
    wrapped.layers = torch.nn.ModuleList(_compiled(checkpoint_wrapper(layer, preserve_rng_state=False))
                                         for layer in wrapped.layers)
    for model in (plain, wrapped):
        torch.manual_seed(0)
        model.init_weights()
    assert len(wrapped.blocks()) == ARGS.n_layers
    unwrapped = {name.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", ""): p
                 for name, p in wrapped.named_parameters()}
    assert list(unwrapped) == [name for name, _ in plain.named_parameters()]
    for name, p in plain.named_parameters():
        assert torch.equal(p, unwrapped[name]), name
