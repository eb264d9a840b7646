"""Every model setting Hugging Face's Olmo2 has, changed one at a time, computes the same logits as
transformers' Olmo2ForCausalLM built from the export's config (no download: the weights are copied in).

The settings transformers lacks are the runtime's alone: norm = "pre" and qk_norm = false (export refuses
them), the init (weights are copied, so it cannot differ); tests/spec/test_every_setting.py proves they change
the model. bias, dropout and init_scaling are refused by the checker (spec/supported.py).
"""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads them: nothing here may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.runtime.export_hf import hf_config  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=4", "model.mlp_hidden=96"]
SETTINGS = {
    "d_model": "model.d_model=96", "n_layers": "model.n_layers=3", "n_heads": "model.n_heads=8",
    "n_kv_heads": "model.n_kv_heads=2", "mlp_hidden": "model.mlp_hidden=80", "norm_eps": "model.norm_eps=1e-2",
    "rope_theta": "model.rope_theta=500000.0", "max_seq_len": "model.max_seq_len=512",
}
"""ModelSpec field -> an override of the small model that changes it; the keys are the HF-representable fields."""
TOLERANCE = 1e-4


@pytest.mark.parametrize("override", SETTINGS.values(), ids=list(SETTINGS))
def test_each_setting_matches_transformers_olmo2(override: str) -> None:
    plan = check(SPECS / "tiny.toml", [*SMALL, override]).plan
    torch.manual_seed(0)
    ours = Transformer(ModelArgs.from_plan(plan))
    ours.init_weights()
    with torch.no_grad():
        for p in ours.parameters():  # norms away from 1 too, so a misplaced norm shows
            p.add_(torch.randn_like(p) * 0.05)
    config = transformers.Olmo2Config(**hf_config(plan))
    hf = transformers.Olmo2ForCausalLM(config).eval()
    state = {k if k.startswith("lm_head.") else f"model.{k}": v for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    tokens = torch.randint(0, plan.tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours.eval()(tokens), hf(tokens).logits
    assert a.shape == b.shape
    assert float((a - b).abs().max()) < TOLERANCE

