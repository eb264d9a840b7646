"""The OLMo 2 transformer, single-device code (torchtitan's advice; nanoGPT's shape).

Reordered norm: h = x + RMSNorm(Attn(x)), out = h + RMSNorm(MLP(h)). QK-norm over the whole
q and k projections before the head split and RoPE. SwiGLU MLP, no biases, untied head.
Parameter names follow Hugging Face's Olmo2ForCausalLM (minus its `model.` prefix), so export
is a key-by-key copy. Generation passes a `KVCache`: the same forward, over the new tokens only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from olmo2spec.plan.plan import Plan

__all__ = ["ModelArgs", "RMSNorm", "KVCache", "document_mask", "Attention", "MLP", "Block", "Trunk", "Transformer",
           "rope_tables"]


@attrs.frozen(kw_only=True)
class ModelArgs:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    vocab_rows: int
    max_seq_len: int = 4096
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-6
    norm: str = "reordered"
    """'reordered' (OLMo 2) or 'pre'."""
    qk_norm: bool = True
    init_std: float = 0.02
    init_cutoff: float = 3.0
    """Truncation of the normal init, in standard deviations."""

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_plan(cls, plan: Plan) -> ModelArgs:
        """The model a plan describes; its embedding and head have `tokenizer.embedding_rows` rows."""
        m = plan.model
        return cls(d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                   mlp_hidden=m.mlp_hidden, vocab_rows=plan.tokenizer.embedding_rows, max_seq_len=m.max_seq_len,
                   rope_theta=m.rope_theta, norm_eps=m.norm_eps, norm=m.norm, qk_norm=m.qk_norm,
                   init_std=m.init_std, init_cutoff=m.init_cutoff)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 whatever the input dtype, weight only (as HF's Olmo2RMSNorm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fused kernel; the same arithmetic as x * rsqrt(mean(x^2) + eps) * weight, in fp32
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)

    def init_weights(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(head_dim: int, seq_len: int, theta: float, device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, (seq_len, head_dim), "rotate half" layout, in fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, nh, T, hs); cos, sin: (T, hs)."""
    return (x * cos.to(x.dtype)) + (_rotate_half(x) * sin.to(x.dtype))


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: query t may attend to key s when s <= t and both are of the same document."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return ((doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1)) & causal).unsqueeze(1)


class KVCache:
    """Keys and values of every layer for decoding a batch of left-padded prompts, preallocated.

    Row b's first `pads[b]` slots are padding: never attended, and the row's positions start at 0
    after them, so that padding changes nothing. Each forward writes its T new tokens at slots
    [length, length + T); a token attends to the real tokens among the last `window` slots
    (max_seq_len by default, the context the model was trained on), itself included: past the
    window the cache slides. RoPE tables cover all `capacity` slots, since positions go on
    growing as the window slides.
    """

    def __init__(self, args: ModelArgs, pads: torch.Tensor, capacity: int, window: int | None = None) -> None:
        device = pads.device
        self.capacity, self.window = capacity, window or args.max_seq_len
        self.length = 0
        """Slots written so far, in every row."""
        self.k: list[torch.Tensor] = [torch.empty(0)] * args.n_layers  # (B, n_kv, capacity, hs), at first write
        self.v: list[torch.Tensor] = [torch.empty(0)] * args.n_layers
        self.pads = pads
        self.slots = torch.arange(capacity, device=device)
        self.valid = self.slots.unsqueeze(0) >= pads.unsqueeze(1)  # (B, capacity): which slots hold tokens
        self.cos, self.sin = rope_tables(args.head_dim, capacity, args.rope_theta, device=device)
        self.mask = torch.empty(0, dtype=torch.bool)
        """What the new tokens of the current forward attend to: (B, 1, T, length + T)."""

    def positions(self, T: int) -> torch.Tensor:
        """(B, T): the positions of T new tokens, each row counted from its first real token."""
        return (self.slots[self.length:self.length + T].unsqueeze(0) - self.pads.unsqueeze(1)).clamp(min=0)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of positions (B, T): (B, 1, T, hs)."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)

    def begin(self, T: int) -> None:
        """Make room for T new tokens and set what they attend to."""
        at = self.length
        if at + T > self.capacity:
            raise ValueError(f"KVCache holds {self.capacity} tokens per row: {at} written, {T} more do not fit")
        if T == 1:  # one token: the real ones among the last `window` slots, itself included
            mask = self.valid[:, : at + 1] & (self.slots[: at + 1] > at - self.window).unsqueeze(0)
            self.mask = mask.view(-1, 1, 1, at + 1)
        else:  # causal, real keys only, within the window; a padding query sees itself (no empty rows)
            q, k = self.slots[at:at + T].view(T, 1), self.slots[: at + T].view(1, at + T)
            causal = (k <= q) & (k > q - self.window)
            self.mask = ((causal.unsqueeze(0) & self.valid[:, : at + T].unsqueeze(1)) | (k == q)).unsqueeze(1)

    def end(self, T: int) -> None:
        self.length += T

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new k, v (B, n_kv, T, hs) of `layer`; attention of q (B, nh, T, hs) over the cache."""
        B, n_heads, T, hs = q.shape
        n_kv, at = k.shape[1], self.length
        if at == 0:
            self.k[layer] = k.new_zeros((B, n_kv, self.capacity, hs))
            self.v[layer] = v.new_zeros((B, n_kv, self.capacity, hs))
        self.k[layer][:, :, at:at + T] = k
        self.v[layer][:, :, at:at + T] = v
        slots = at + T
        keys, values = self.k[layer][:, :, :slots], self.v[layer][:, :, :slots]
        if T == 1:  # one new token: plain matmuls beat SDPA's masked path on small shapes (a CPU's decode)
            qg = q.view(B, n_kv, n_heads // n_kv, hs)  # the heads sharing a key/value head together
            scale: float = hs ** -0.5  # typeshed types int ** float as Any (it may be complex)
            scores = (qg @ keys.transpose(-1, -2)) * scale  # (B, n_kv, g, slots)
            scores = scores.masked_fill(~self.mask.view(B, 1, 1, slots), float("-inf"))
            return (scores.softmax(dim=-1) @ values).view(B, n_heads, 1, hs)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=self.mask, enable_gqa=n_kv != n_heads)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch (finished ones leave)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.pads, self.valid = self.pads[rows], self.valid[rows]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        kv_dim = args.n_kv_heads * args.head_dim
        self.q_proj = nn.Linear(args.d_model, args.d_model, bias=False)
        self.k_proj = nn.Linear(args.d_model, kv_dim, bias=False)
        self.v_proj = nn.Linear(args.d_model, kv_dim, bias=False)
        self.o_proj = nn.Linear(args.d_model, args.d_model, bias=False)
        self.q_norm = RMSNorm(args.d_model, args.norm_eps) if args.qk_norm else None
        self.k_norm = RMSNorm(kv_dim, args.norm_eps) if args.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C); cos, sin (T, hs) or (B, 1, T, hs); with a cache, x holds the new tokens only;
        `mask` (B, 1, T, T), True where a query may attend to a key, replaces the causal mask."""
        B, T, C = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None and self.k_norm is not None:  # over the whole projection, before heads
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            y = cache.attend(layer, q, k, v)  # (B, nh, T, hs)
        elif mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               enable_gqa=self.n_kv_heads != self.n_heads)  # (B, nh, T, hs)
        out: torch.Tensor = self.o_proj(y.transpose(1, 2).reshape(B, T, C))  # torch types a module's call as Any
        return out

    def init_weights(self, std: float, cutoff: float) -> None:
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            nn.init.trunc_normal_(linear.weight, std=std, a=-cutoff * std, b=cutoff * std)
        for norm in (self.q_norm, self.k_norm):
            if norm is not None:
                norm.init_weights()


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(args.d_model, args.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(args.d_model, args.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(args.mlp_hidden, args.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out

    def init_weights(self, std: float, cutoff: float) -> None:
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.trunc_normal_(linear.weight, std=std, a=-cutoff * std, b=cutoff * std)


class Block(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.reordered = args.norm == "reordered"
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        # HF's names: the norms sit after each sublayer in OLMo 2 (before it with norm = "pre")
        self.post_attention_layernorm = RMSNorm(args.d_model, args.norm_eps)
        self.post_feedforward_layernorm = RMSNorm(args.d_model, args.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor
        if self.reordered:
            h = x + self.post_attention_layernorm(self.self_attn(x, cos, sin, cache, layer, mask))
            out = h + self.post_feedforward_layernorm(self.mlp(h))
        else:
            h = x + self.self_attn(self.post_attention_layernorm(x), cos, sin, cache, layer, mask)
            out = h + self.mlp(self.post_feedforward_layernorm(h))
        return out

    def init_weights(self, std: float, cutoff: float) -> None:
        self.self_attn.init_weights(std, cutoff)
        self.mlp.init_weights(std, cutoff)
        self.post_attention_layernorm.init_weights()
        self.post_feedforward_layernorm.init_weights()


class Trunk(nn.Module):
    """Embedding, blocks and final norm: what the language model and the scalar model share, by the same
    names (so a policy's checkpoint loads into either). A subclass adds its output head."""

    # buffers (max_seq_len, head_dim) that no checkpoint holds: `init_rope` fills them
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_rows, args.d_model)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.d_model, args.norm_eps)
        cos, sin = rope_tables(args.head_dim, args.max_seq_len, args.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def head(self) -> nn.Module:
        """The output head (sharded with the final norm)."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """Every weight as a fresh model has it, and the RoPE tables (each model's own head)."""
        raise NotImplementedError

    def hidden_states(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                      cache: KVCache | None = None, last_only: bool = False,
                      doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> the final norm's output (B, T, d_model), or (B, d_model) with `last_only`.

        Without a cache: causal attention over `tokens`, at `positions` (B, T) (default 0..T-1).
        With `doc_ids` (B, T) too (packed documents, e.g. SFT's conversations): a token attends only
        to earlier tokens of its own document (a block-diagonal causal mask); pass each document's
        own positions (from 0) with it.
        With a cache: `tokens` are the next T of each row, attending to the cache's earlier ones too,
        at the cache's positions by default; their keys and values join the cache.
        """
        T = tokens.shape[1]
        if cache is not None:
            cache.begin(T)
            cos, sin = cache.rope(cache.positions(T) if positions is None else positions)  # (B, 1, T, hs)
        elif positions is not None:
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)
        else:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed_tokens(tokens)  # (B, T, C)
        mask = None if doc_ids is None or cache is not None else document_mask(doc_ids)
        for i, layer in enumerate(self.layers):
            # training's call stays (x, cos, sin): a per-layer int would recompile each compiled block
            if cache is not None:
                x = layer(x, cos, sin, cache, i)
            elif mask is not None:
                x = layer(x, cos, sin, mask=mask)
            else:
                x = layer(x, cos, sin)
        if cache is not None:
            cache.end(T)
        if last_only:
            x = x[:, -1]  # (B, C)
        out: torch.Tensor = self.norm(x)
        return out

    @torch.no_grad()
    def init_trunk(self) -> None:
        """Embedding and blocks from N(0, init_std) truncated at +-init_cutoff std (paper 3.2); norms at 1."""
        a = self.args
        bound = a.init_cutoff * a.init_std
        nn.init.trunc_normal_(self.embed_tokens.weight, std=a.init_std, a=-bound, b=bound)
        for block in self.blocks():
            block.init_weights(a.init_std, a.init_cutoff)
        self.norm.init_weights()

    @torch.no_grad()
    def init_rope(self) -> None:
        """The RoPE tables, which no checkpoint holds: after `to_empty`, before loading weights or with them."""
        a = self.args
        cos, sin = rope_tables(a.head_dim, a.max_seq_len, a.rope_theta, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def blocks(self) -> list[Block]:
        """The blocks in order, inside whatever wrappers parallelism put around them (checkpointing, compile)."""
        return [module for module in self.layers.modules() if isinstance(module, Block)]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Transformer(Trunk):
    """The language model: the trunk and an untied head over the vocabulary."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args)
        self.lm_head = nn.Linear(args.d_model, args.vocab_rows, bias=False)

    def head(self) -> nn.Module:
        return self.lm_head

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False, doc_ids: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab_rows), or (B, vocab_rows) of the last token with `last_only`
        (the arguments as `hidden_states` takes them)."""
        logits: torch.Tensor = self.lm_head(self.hidden_states(tokens, positions, cache, last_only, doc_ids))
        return logits

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every weight from N(0, init_std) truncated at +-init_cutoff std (paper 3.2); norms at 1; RoPE tables."""
        self.init_trunk()
        a = self.args
        bound = a.init_cutoff * a.init_std
        nn.init.trunc_normal_(self.lm_head.weight, std=a.init_std, a=-bound, b=bound)
        self.init_rope()
