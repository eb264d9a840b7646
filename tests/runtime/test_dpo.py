"""DPO's pieces: the loss against a direct computation of the formula, the preference data and its
batches, and the key of the cached reference log-probs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from olmo2spec.data.chat import ChatFormatError  # noqa: E402
from olmo2spec.data.preferences import PreferenceBatches, read_preference_file  # noqa: E402
from olmo2spec.data.sft_batches import IGNORE  # noqa: E402
from olmo2spec.data.tokenizer import load_tokenizer  # noqa: E402
from olmo2spec.runtime.dpo_loss import dpo_losses, response_logps  # noqa: E402
from olmo2spec.runtime.dpo_reference import load_reference, reference_key, save_reference  # noqa: E402

TOKENIZER = "bytes"


def _direct(logits: torch.Tensor, labels: torch.Tensor, normalise: bool) -> list[float]:
    """Each row's response log-probability, token by token, from the softmax's definition."""
    out = []
    for row_logits, row_labels in zip(logits.tolist(), labels.tolist(), strict=True):
        total, count = 0.0, 0
        for scores, label in zip(row_logits, row_labels, strict=True):
            if label == IGNORE:
                continue
            total += scores[label] - math.log(sum(math.exp(s) for s in scores))
            count += 1
        out.append(total / count if normalise else total)
    return out


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two pairs (rows chosen, rejected, chosen, rejected) with responses of different lengths."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 7, 11, generator=g, dtype=torch.float64)
    labels = torch.full((4, 7), IGNORE)
    for row, (start, stop) in enumerate([(2, 6), (2, 4), (1, 7), (3, 5)]):
        labels[row, start:stop] = torch.randint(0, 11, (stop - start,), generator=g)
    return logits, labels


@pytest.mark.parametrize("loss", ["dpo_norm", "dpo"])
def test_the_loss_on_one_batch_is_the_formula_computed_directly(loss: str) -> None:
    beta = 5.0
    policy_logits, labels = _batch(0)
    reference_logits, _ = _batch(1)
    normalise = loss == "dpo_norm"
    pi, ref = _direct(policy_logits, labels, normalise), _direct(reference_logits, labels, normalise)
    want = [-math.log(1 / (1 + math.exp(-beta * ((pi[2 * i] - ref[2 * i]) - (pi[2 * i + 1] - ref[2 * i + 1])))))
            for i in range(2)]
    policy = response_logps(policy_logits, labels, loss).view(-1, 2)
    reference = response_logps(reference_logits, labels, loss).view(-1, 2)
    losses, chosen, rejected = dpo_losses(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], beta)
    assert losses.tolist() == pytest.approx(want, rel=1e-5)
    assert chosen.tolist() == pytest.approx([beta * (pi[0] - ref[0]), beta * (pi[2] - ref[2])], rel=1e-5)
    assert rejected.tolist() == pytest.approx([beta * (pi[1] - ref[1]), beta * (pi[3] - ref[3])], rel=1e-5)


def test_dpo_norm_divides_each_response_by_its_length_and_dpo_does_not() -> None:
    logits, labels = _batch(2)
    summed, normed = response_logps(logits, labels, "dpo"), response_logps(logits, labels, "dpo_norm")
    lengths = (labels != IGNORE).sum(-1).double()
    assert lengths.tolist() == [4, 2, 6, 2]
    assert (normed * lengths).tolist() == pytest.approx(summed.tolist(), rel=1e-6)
    with pytest.raises(ValueError, match="'ipo': not one of dpo_norm, dpo"):
        response_logps(logits, labels, "ipo")


def test_at_the_reference_the_loss_is_log_2_and_its_gradient_favours_the_chosen() -> None:
    logits, labels = _batch(3)
    logits.requires_grad_(True)
    policy = response_logps(logits, labels, "dpo_norm").view(-1, 2)
    reference = policy.detach()
    losses, chosen, rejected = dpo_losses(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], 5.0)
    assert losses.tolist() == pytest.approx([math.log(2)] * 2)
    assert chosen.tolist() == [0.0, 0.0] and rejected.tolist() == [0.0, 0.0]
    losses.sum().backward()
    # descending the loss raises the chosen response's log-prob: its label's logit gets a negative gradient
    assert logits.grad is not None and float(logits.grad[0, 2, int(labels[0, 2])]) < 0


def _write(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _pair(question: str, good: str, bad: str) -> dict[str, object]:
    return {"prompt": [{"role": "user", "content": question}], "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}]}


def test_a_pair_trains_on_its_last_answer_only_in_either_form(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(TOKENIZER)
    split = _pair("2+2?", "4", "five")
    whole = {side: split["prompt"] + split[side] for side in ("chosen", "rejected")}  # type: ignore[operator]
    a, b = read_preference_file(_write(tmp_path / "a.jsonl", [split, whole]), tokenizer)
    for pair in (a, b):
        chosen = tokenizer.decode([int(i) for i in pair.chosen.ids[pair.chosen.trained]])
        rejected = tokenizer.decode([int(i) for i in pair.rejected.ids[pair.rejected.trained]])
        assert chosen.startswith("4") and rejected.startswith("five")
        assert len(chosen) < 20 and len(rejected) < 20  # the eos, not the prompt
    assert (a.chosen.ids == b.chosen.ids).all() and (a.chosen.trained == b.chosen.trained).all()


def test_a_bad_pair_is_named_by_file_line_and_field(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(TOKENIZER)
    bad = _pair("q", "a", "b")
    del bad["rejected"]
    path = _write(tmp_path / "p.jsonl", [_pair("q", "a", "b"), bad])
    with pytest.raises(ChatFormatError, match=rf"^{path}:2: field \"rejected\": missing"):
        read_preference_file(path, tokenizer)
    user_last = _pair("q", "a", "b")
    user_last["chosen"] = [{"role": "user", "content": "no answer"}]
    path = _write(tmp_path / "q.jsonl", [user_last])
    with pytest.raises(ChatFormatError, match=r":1: field \"chosen\": its last message is the user's"):
        read_preference_file(path, tokenizer)
    bad_role = _pair("q", "a", "b")
    bad_role["prompt"] = [{"role": "robot", "content": "hi"}]
    with pytest.raises(ChatFormatError, match=r":1: field \"prompt\[0\]\".role: 'robot' is not one of"):
        read_preference_file(_write(tmp_path / "r.jsonl", [bad_role]), tokenizer)


def test_a_pair_s_two_sides_share_a_micro_batch_and_the_ranks_split_the_pairs(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(TOKENIZER)
    records = [_pair(f"q{i}", "yes" * (i + 1), "no") for i in range(5)]
    pairs = read_preference_file(_write(tmp_path / "p.jsonl", records), tokenizer)
    one = PreferenceBatches(pairs, batch_size=5, epochs=1, seq_len=64, seed=1, pad_id=0, micro_pairs=2)
    batch = one.batch(0)
    assert [len(p) for _, _, p in batch.micro_batches] == [2, 2, 1] and batch.pairs == batch.global_pairs == 5
    tokens, labels, indices = batch.micro_batches[0]
    assert tokens.shape[0] == 4
    first = one.sequences[int(indices[0])]
    assert (tokens[0, :len(first[0][0])] == first[0][0]).all() and (tokens[1, :len(first[1][0])] == first[1][0]).all()
    assert (labels[1, len(first[1][0]):] == IGNORE).all()  # padding trains nothing
    ranks = [PreferenceBatches(pairs, batch_size=5, epochs=1, seq_len=64, seed=1, pad_id=0, micro_pairs=2,
                               rank=r, world_size=2).batch(0) for r in range(2)]
    assert [len(b.micro_batches) for b in ranks] == [2, 2]  # the same count of forwards on every rank
    assert [b.pairs for b in ranks] == [3, 2]
    seen = sorted(int(i) for b in ranks for _, _, p in b.micro_batches for i in p if i >= 0)
    assert seen == sorted(int(i) for i in one.step_pairs(0))


def _key(tmp_path: Path, dataset: Path, **changes: object) -> dict[str, object]:
    start = tmp_path / "sft" / "step-0000004"
    start.mkdir(parents=True, exist_ok=True)
    if not (start / "COMPLETE").exists():
        (start / "COMPLETE").write_text('{"step": 4, "final": true}')
    settings: dict[str, object] = {"examples": 8, "loss": "dpo_norm", "max_seq_len": 256, "tokenizer": TOKENIZER,
                                   "template": "tulu", **changes}
    return reference_key(start=start, dataset=dataset, **settings)  # type: ignore[arg-type]


def test_the_cache_is_reused_under_its_key_and_missed_when_what_it_depends_on_changes(tmp_path: Path) -> None:
    dataset = _write(tmp_path / "train.jsonl", [_pair("q", "a", "b")])
    run_dir = tmp_path / "dpo"
    logps = np.array([[-1.5, -2.25]])
    key = _key(tmp_path, dataset)
    path = save_reference(run_dir, key, logps)
    found = load_reference(run_dir, _key(tmp_path, dataset), 1)
    assert found is not None and found[1] == path and (found[0] == logps).all()
    assert load_reference(run_dir, _key(tmp_path, dataset, loss="dpo"), 1) is None
    assert load_reference(run_dir, _key(tmp_path, dataset, max_seq_len=128), 1) is None
    assert load_reference(run_dir, key, 2) is None  # another count of pairs
    _write(dataset, [_pair("q", "a", "c")])
    assert load_reference(run_dir, _key(tmp_path, dataset), 1) is None
    (tmp_path / "sft" / "step-0000004" / "COMPLETE").write_text('{"step": 4, "final": true, "files": {}}')
    assert load_reference(run_dir, _key(tmp_path, _write(dataset, [_pair("q", "a", "b")])), 1) is None
    # a new key's cache replaces the old one; a half-written one is never taken
    save_reference(run_dir, _key(tmp_path, dataset), logps)
    assert len(list(run_dir.glob("reference-logps-*.npz"))) == 1
    next(run_dir.glob("reference-logps-*.npz")).write_bytes(b"PK\x03\x04 torn")
    assert load_reference(run_dir, _key(tmp_path, dataset), 1) is None
