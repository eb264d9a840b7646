"""The OLMo 2 transformer, single-device code (torchtitan's advice; nanoGPT's shape).

Reordered norm: h = x + RMSNorm(Attn(x)), out = h + RMSNorm(MLP(h)). QK-norm over the whole
q and k projections before the head split and RoPE. SwiGLU MLP, no biases, untied head.
Parameter names follow Hugging Face's Olmo2ForCausalLM (minus its `model.` prefix), so export
is a key-by-key copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from olmo2spec.plan.plan import Plan

__all__ = ["ModelArgs", "RMSNorm", "Attention", "MLP", "Block", "Transformer", "rope_tables"]


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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None and self.k_norm is not None:  # over the whole projection, before heads
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.n_kv_heads != self.n_heads)  # (B, nh, T, hs)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))

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
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.reordered:
            h = x + self.post_attention_layernorm(self.self_attn(x, cos, sin))
            return h + self.post_feedforward_layernorm(self.mlp(h))
        h = x + self.self_attn(self.post_attention_layernorm(x), cos, sin)
        return h + self.mlp(self.post_feedforward_layernorm(h))

    def init_weights(self, std: float, cutoff: float) -> None:
        self.self_attn.init_weights(std, cutoff)
        self.mlp.init_weights(std, cutoff)
        self.post_attention_layernorm.init_weights()
        self.post_feedforward_layernorm.init_weights()


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_rows, args.d_model)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.d_model, args.norm_eps)
        self.lm_head = nn.Linear(args.d_model, args.vocab_rows, bias=False)
        cos, sin = rope_tables(args.head_dim, args.max_seq_len, args.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab_rows)."""
        T = tokens.shape[1]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed_tokens(tokens)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))  # type: ignore[no-any-return]

    @torch.no_grad()
    def init_weights(self) -> None:
        """Every weight from N(0, init_std) truncated at +-init_cutoff std (paper 3.2); norms at 1; RoPE tables."""
        a = self.args
        bound = a.init_cutoff * a.init_std
        nn.init.trunc_normal_(self.embed_tokens.weight, std=a.init_std, a=-bound, b=bound)
        for layer in self.layers:
            layer.init_weights(a.init_std, a.init_cutoff)  # type: ignore[operator]
        self.norm.init_weights()
        nn.init.trunc_normal_(self.lm_head.weight, std=a.init_std, a=-bound, b=bound)
        cos, sin = rope_tables(a.head_dim, a.max_seq_len, a.rope_theta, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

