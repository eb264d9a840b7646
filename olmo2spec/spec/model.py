"""`[model]` and `[tokenizer]`: the network's shape and the vocabulary it reads."""

from __future__ import annotations

import attrs

from olmo2spec.spec.fields import doc, in_range, non_negative, one_of, positive

__all__ = ["ModelSpec", "TokenizerSpec", "NORMS", "TOKENIZERS"]

NORMS = ("reordered", "pre")
TOKENIZERS = ("dolma2", "bytes")


@attrs.frozen(kw_only=True)
class ModelSpec:
    """The decoder-only transformer (paper section 2.1, Table 3)."""

    d_model: int = doc("Width of the residual stream.", validator=positive)
    n_layers: int = doc("Number of transformer blocks.", validator=positive)
    n_heads: int = doc("Query heads per attention layer.", validator=positive)
    n_kv_heads: int = doc("Key/value heads; equal to n_heads for MHA, fewer for GQA.", validator=positive)
    mlp_hidden: int = doc("Hidden width of the SwiGLU MLP (w1 and w3 output size).", validator=positive)
    norm: str = doc(
        "Where RMSNorm sits: 'reordered' normalises sublayer outputs (OLMo 2, section 3.2.1); "
        "'pre' is the classic pre-norm.",
        default="reordered", validator=one_of(NORMS))
    qk_norm: bool = doc("RMSNorm over the full q and k projections before RoPE (section 3.2.2).", default=True)
    norm_eps: float = doc("RMSNorm epsilon.", default=1e-6, validator=positive)
    rope_theta: float = doc("RoPE base frequency (section 3.2.3: 500,000).", default=500_000.0,
                            validator=positive)
    init_std: float = doc("Std of the truncated-normal init of every weight (section 3.2.4).",
                          default=0.02, validator=positive)
    init_cutoff: float = doc("Truncation of the init, in standard deviations.", default=3.0,
                             validator=positive)
    init_scaling: str = doc(
        "'none' keeps init_std in every layer (OLMo 2, section 3.2). 'depth' (OLMo-0424's depth-scaled init) "
        "is refused: the runtime does not build it.", default="none", validator=one_of(("none", "depth")))
    bias: bool = doc("Biases in linear layers: OLMo 2 has none, and true is refused (the runtime builds none).",
                     default=False)
    max_seq_len: int = doc("Longest sequence the model is trained on; RoPE tables are built for it.",
                           default=4096, validator=positive)
    dropout: float = doc("Dropout probability: OLMo 2 uses none, and anything but 0 is refused (the runtime has "
                         "no dropout).", default=0.0, validator=in_range(0, 1))


@attrs.frozen(kw_only=True)
class TokenizerSpec:
    """The vocabulary (section 2.2): 'dolma2' is cl100k_base plus OLMo's special tokens."""

    name: str = doc("'dolma2' (OLMo 2's tokenizer) or 'bytes' (256 byte tokens, for toy recipes).",
                    validator=one_of(TOKENIZERS))
    vocab_size: int = doc("Token ids the tokenizer can produce (dolma2: 100,278; bytes: 258); must be the named "
                          "tokenizer's.", validator=positive)
    embedding_rows: int = doc(
        "Rows of the embedding and output head, padded up for fast matmuls (dolma2: 100,352).",
        validator=positive)
    eos_id: int = doc("End-of-document id; separates documents in token files; must be the named tokenizer's "
                      "(dolma2: 100,257; bytes: 256).", validator=non_negative)
    pad_id: int = doc("Padding id; must be the named tokenizer's (dolma2: 100,277; bytes: 257).",
                      validator=non_negative)
    add_bos: bool = doc("Prepend a beginning-of-sequence token: OLMo 2 pretrains without one, and true is refused "
                        "(prepare writes none).", default=False)
