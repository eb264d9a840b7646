"""SFT's packed batches: the loss equals transformers' Olmo2ForCausalLM loss of each conversation on its own
(sum and mean), attention never crosses conversations in a pack, and the batches split over ranks exactly."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads them: nothing here may touch the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.data.chat import ChatExample, encode_chat  # noqa: E402
from olmo2spec.data.sft_batches import IGNORE, SftBatches  # noqa: E402
from olmo2spec.data.tokenizer import ByteTokenizer  # noqa: E402
from olmo2spec.plan.plan import Plan  # noqa: E402
from olmo2spec.runtime.loss import weighted_ce  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]
SEQ = 256


def _conversations(n: int, seed: int = 0) -> list[ChatExample]:
    rng = np.random.default_rng(seed)
    tok, out = ByteTokenizer(), []
    for i in range(n):
        turns = []
        for t in range(1 + i % 2):  # one or two exchanges
            a, b = rng.integers(1, 99, size=2)
            turns += [{"role": "user", "content": f"Add {a} and {b}." + " Please." * int(rng.integers(0, 3))},
                      {"role": "assistant", "content": f"{a} + {b} = {a + b}." + (" Done." if t else "")}]
        out.append(encode_chat(tok, turns))
    return out


def _plan() -> Plan:
    return check(SPECS / "tiny.toml", SMALL).plan


def _model(plan: Plan) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_plan(plan))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():  # away from the init, so that a misplaced norm would show
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _batches(examples: list[ChatExample], loss: str, **kw: int) -> SftBatches:
    settings = {"batch_size": len(examples), "epochs": 1, "seq_len": SEQ, "seed": 3, "micro_rows": 1, **kw}
    return SftBatches(examples, loss=loss, pad_id=257, **settings)


def _our_loss(model: Transformer, batches: SftBatches, step: int = 0) -> float:
    b = batches.batch(step)
    tensors = [torch.from_numpy(a) for a in (b.tokens, b.labels, b.positions, b.doc_ids, b.weights)]
    tokens, labels, positions, doc_ids, weights = tensors
    with torch.no_grad():
        return float(weighted_ce(model(tokens, positions=positions, doc_ids=doc_ids), labels, weights))


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_the_packed_loss_equals_transformers_per_conversation(loss: str) -> None:
    transformers = pytest.importorskip("transformers")
    from olmo2spec.runtime.export_hf import hf_config

    plan = _plan()
    ours = _model(plan)
    hf = transformers.Olmo2ForCausalLM(transformers.Olmo2Config(**hf_config(plan))).eval()
    state = {k if k.startswith("lm_head.") else f"model.{k}": v for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing)

    examples = _conversations(9)
    assert max(len(e.ids) for e in examples) <= SEQ  # none cut
    batches = _batches(examples, loss)
    assert batches.batch(0).tokens.shape[0] < len(examples)  # several conversations share a row
    per_conversation, counts = [], []
    for e in examples:  # transformers shifts the labels itself: label t is token t where it is trained
        ids = torch.from_numpy(e.ids).unsqueeze(0)
        labels = torch.where(torch.from_numpy(e.trained), ids, torch.full_like(ids, IGNORE))
        with torch.no_grad():
            per_conversation.append(float(hf(ids, labels=labels).loss))
        counts.append(int(e.trained[1:].sum()))
    expected = (np.dot(per_conversation, counts) / sum(counts) if loss == "sum" else float(np.mean(per_conversation)))
    assert abs(_our_loss(ours, batches) - expected) < 1e-5
    # and the other reduction gives another number: the setting is used
    other = _our_loss(ours, _batches(examples, "mean" if loss == "sum" else "sum"))
    assert abs(other - expected) > 1e-4


def test_attention_never_crosses_conversations_in_a_pack() -> None:
    plan = _plan()
    model = _model(plan)
    examples = _conversations(6)
    batches = _batches(examples, "sum")
    a = batches.batch(0)
    first = int(a.doc_ids[0, 0])  # the slot packed first in row 0: change that conversation's tokens (not bos)
    changed, index = list(examples), int(batches.step_examples(0)[first])
    e = changed[index]
    changed[index] = ChatExample(ids=np.where(np.arange(len(e.ids)) > 0, (e.ids * 7 + 3) % 256, e.ids),
                                 trained=e.trained)
    b = _batches(changed, "sum").batch(0)
    assert np.array_equal(a.doc_ids, b.doc_ids) and not np.array_equal(a.tokens, b.tokens)

    def logits(batch):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            return model(torch.from_numpy(batch.tokens), positions=torch.from_numpy(batch.positions),
                         doc_ids=torch.from_numpy(batch.doc_ids))

    la, lb = logits(a), logits(b)
    others = torch.from_numpy((a.doc_ids != first) & (a.doc_ids >= 0))
    assert others[0].any()  # row 0 holds other conversations too
    assert torch.equal(la[others], lb[others])
    assert not torch.equal(la[~others], lb[~others])
    # and a packed conversation's logits are those it has alone, from position 0
    row, cols = 0, np.flatnonzero(a.doc_ids[0] == a.doc_ids[0, -1 if a.doc_ids[0, -1] >= 0 else 0])
    alone = torch.from_numpy(a.tokens[row, cols]).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(model(alone)[0], la[row, cols], atol=1e-5)


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_each_step_splits_over_ranks_into_whole_conversations_with_weights_summing_to_one(loss: str) -> None:
    examples = _conversations(50, seed=1)
    world, batch_size, epochs = 3, 16, 2
    every = [_batches(examples, loss, batch_size=batch_size, epochs=epochs, micro_rows=2, rank=r, world_size=world)
             for r in range(world)]
    steps = every[0].steps
    assert steps == -(-50 * epochs // batch_size)
    seen: list[int] = []
    for step in range(steps):
        parts = [b.batch(step) for b in every]
        assert len({len(p.micro_batches) for p in parts}) == 1
        for p in parts:  # slices of at most 2 rows, never empty, covering every row once
            assert all(0 < m.stop - m.start <= 2 for m in p.micro_batches)
            assert [r for m in p.micro_batches for r in range(m.start, m.stop)] == list(range(p.tokens.shape[0]))
            padding = np.all(p.doc_ids < 0, axis=1)
            assert not np.any(padding[:-1] & ~padding[1:])  # rows all of padding only after the others
        assert abs(sum(float(p.weights.sum(dtype=np.float64)) for p in parts) - 1.0) < 1e-5
        for p in parts:
            assert np.all((p.labels == IGNORE) == (p.weights == 0))
            assert np.all(p.tokens[p.doc_ids < 0] == 257)
            docs = {int(d) for d in np.unique(p.doc_ids) if d >= 0}
            for d in docs:  # each slot whole, in one row, from position 0
                rows, cols = np.nonzero(p.doc_ids == d)
                assert len(set(rows.tolist())) == 1
                assert np.array_equal(p.positions[rows, cols], np.arange(len(cols)))
        seen += every[0].step_examples(step).tolist()
    assert sorted(seen) == sorted(list(range(50)) * epochs)  # every conversation once per epoch
    assert every[0].order[:50].tolist() != every[0].order[50:].tolist()  # a new order each epoch
