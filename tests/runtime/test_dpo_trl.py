"""DPO's loss against TRL's: the same preference pairs through TRL's DPOTrainer (its own tokenization with the
Tulu chat template, its collator, its `_compute_loss`) and through ours give the same ids and the same loss,
`dpo_norm` against TRL's length-normalised `sigmoid_norm` and `dpo` against its `sigmoid`, beta 5."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads them: nothing here may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from conftest import SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.data.chat import TULU_TEMPLATE  # noqa: E402
from olmo2spec.data.preferences import PreferenceBatches, read_preference_file  # noqa: E402
from olmo2spec.data.tokenizer import ByteTokenizer  # noqa: E402
from olmo2spec.plan.plan import Plan  # noqa: E402
from olmo2spec.runtime.dpo_loss import dpo_losses, response_logps  # noqa: E402
from olmo2spec.runtime.export_hf import bytes_tokenizer_json, hf_config  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]
BETA = 5.0
TRL_LOSS = {"dpo_norm": "sigmoid_norm", "dpo": "sigmoid"}


def _records(n: int) -> list[dict[str, list[dict[str, str]]]]:
    """Pairs in the prompt/chosen/rejected form, responses of different lengths on the two sides."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(1, 99, size=2))
        padding = " Sure." * int(rng.integers(0, 4))
        out.append({"prompt": [{"role": "user", "content": f"Add {a} and {b}."}],
                    "chosen": [{"role": "assistant", "content": f"{a} + {b} = {a + b}.{padding}"}],
                    "rejected": [{"role": "assistant", "content": f"{a + b + 1}"}]})
    return out


def _models(plan: Plan) -> tuple[Transformer, Transformer]:
    """A policy and a reference a little apart (a DPO run's early steps), so that neither loss saturates."""
    torch.manual_seed(0)
    reference = Transformer(ModelArgs.from_plan(plan))
    reference.init_weights()
    policy = Transformer(ModelArgs.from_plan(plan))
    with torch.no_grad():
        for r in reference.parameters():  # away from the init, so that a misplaced norm would show
            r.add_(torch.randn_like(r) * 0.05)
        for p, r in zip(policy.parameters(), reference.parameters(), strict=True):
            p.copy_(r + torch.randn_like(r) * 0.01)
    return policy.eval(), reference.eval()


def _hf(plan: Plan, ours: Transformer) -> torch.nn.Module:
    hf = transformers.Olmo2ForCausalLM(transformers.Olmo2Config(**hf_config(plan))).eval()
    state = {k if k.startswith("lm_head.") else f"model.{k}": v for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    return hf


def _hf_tokenizer() -> object:
    """The byte tokenizer as the chat model's HF export carries it (runtime/export_hf.py), built in memory."""
    from tokenizers import Tokenizer

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(bytes_tokenizer_json()), bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token="<|pad|>", unk_token="<|endoftext|>", chat_template=TULU_TEMPLATE)


def _trl_loss(plan: Plan, policy: Transformer, reference: Transformer, records: list[dict[str, object]],
              loss: str, tmp: Path) -> tuple[float, list[list[int]]]:
    """TRL's loss of one batch holding all the pairs, and the sequences (prompt + response) it trained on."""
    # fp32 as ours: TRL's default bf16 would autocast the reference model's forward
    args = trl.DPOConfig(output_dir=str(tmp), loss_type=[TRL_LOSS[loss]], beta=BETA, max_length=None,
                         per_device_train_batch_size=len(records), precompute_ref_log_probs=False, report_to=[],
                         bf16=False, use_cpu=True, dataset_num_proc=None, remove_unused_columns=False)
    trainer = trl.DPOTrainer(model=_hf(plan, policy), ref_model=_hf(plan, reference), args=args,
                             train_dataset=datasets.Dataset.from_list(records), processing_class=_hf_tokenizer())
    examples = [trainer.train_dataset[i] for i in range(len(records))]
    sequences = [e["prompt_ids"] + e[side] for side in ("chosen_ids", "rejected_ids") for e in examples]
    inputs = trainer.data_collator(examples)
    trainer.model.eval()  # no dropout either way; `_compute_loss` logs under "eval"
    with torch.no_grad():
        value = trainer.compute_loss(trainer.model, inputs)
    return float(value), sequences


def _our_loss(policy: Transformer, reference: Transformer, records: list[dict[str, object]],
              loss: str, tmp: Path) -> tuple[float, list[list[int]]]:
    """Our loss of the same batch, the pairs read from a JSON-lines file as a `dpo` stage reads them."""
    tok = ByteTokenizer()
    path = tmp / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    pairs = read_preference_file(path, tok)
    batches = PreferenceBatches(pairs, batch_size=len(pairs), epochs=1, seq_len=256, seed=0, pad_id=tok.pad_id,
                                micro_pairs=len(pairs))
    tokens, labels = (torch.from_numpy(a) for a in batches.rows(list(range(len(pairs)))))
    with torch.no_grad():
        pi = response_logps(policy(tokens), labels, loss).view(-1, 2)
        ref = response_logps(reference(tokens), labels, loss).view(-1, 2)
    losses, _, _ = dpo_losses(pi[:, 0], pi[:, 1], ref[:, 0], ref[:, 1], BETA)
    sequences = [[int(t) for t in p.chosen.ids] for p in pairs] + [[int(t) for t in p.rejected.ids] for p in pairs]
    return float(losses.mean()), sequences


@pytest.mark.parametrize("loss", ["dpo_norm", "dpo"])
def test_the_dpo_loss_equals_trl_s_on_the_same_pairs(loss: str, tmp_path: Path) -> None:
    plan = check(SPECS / "tiny.toml", SMALL).plan
    policy, reference = _models(plan)
    records = _records(6)
    ours, our_sequences = _our_loss(policy, reference, records, loss, tmp_path)
    theirs, their_sequences = _trl_loss(plan, policy, reference, records, loss, tmp_path / "trl")
    assert our_sequences == their_sequences  # the same tokens, chat template and all
    # fp32 both sides: summed log-probs of ~100 carry ~1e-5 of rounding each, times beta 5
    assert abs(ours - theirs) < 5e-5, (ours, theirs)
    assert abs(ours - np.log(2)) > 5e-3  # policy and reference differ: the ratios are used
