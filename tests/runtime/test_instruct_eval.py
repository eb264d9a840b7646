"""The demo's instruct columns: chat answers parseable and exact, preference accuracy, math reward."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402
from test_evaluate import SMALL, TOK, bigram_model, random_model, save_final  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.data.chat import encode_chat  # noqa: E402
from olmo2spec.data.preferences import PreferencePair  # noqa: E402
from olmo2spec.plan.plan import Plan  # noqa: E402
from olmo2spec.runtime import demo_report  # noqa: E402
from olmo2spec.runtime import instruct_eval as ie  # noqa: E402
from olmo2spec.runtime.checkpoint import latest_complete  # noqa: E402
from olmo2spec.runtime.evaluate import EvalDataError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NL = ord("\n")  # the chat prompt's last token: "<|assistant|>\n"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return check(SPECS / "tiny.toml", SMALL).plan


def _chat(user: str, answer: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_an_answer_is_parseable_when_the_turn_ends_within_the_budget(plan):
    answers_seven = bigram_model(plan, {NL: ord("7"), ord("7"): TOK.eos_id})
    result = ie.chat_format(answers_seven, TOK, [_chat("What is 3 + 4?", "7"), _chat("And 4 + 4?", "8")])
    assert (result["format"], result["exact"], result["n"]) == (1.0, 0.5, 2)
    rambles = bigram_model(plan, {NL: ord("7"), ord("7"): ord("7")})  # never ends its turn
    assert ie.chat_format(rambles, TOK, [_chat("What is 3 + 4?", "7")])["format"] == 0.0
    silent = bigram_model(plan, {NL: TOK.eos_id})  # ends at once, with nothing
    assert ie.chat_format(silent, TOK, [_chat("What is 3 + 4?", "7")])["format"] == 0.0


def test_an_answer_that_opens_a_new_turn_is_not_parseable():
    assert ie._parseable("7", True)
    assert not ie._parseable("7\n<|user|>\nmore", True)
    assert not ie._parseable("7", False)


def test_a_held_out_conversation_without_an_answer_is_a_data_error(plan):
    with pytest.raises(EvalDataError, match="held-out conversation 1: its last message is not the assistant"):
        ie.chat_format(random_model(plan), TOK, [{"messages": [{"role": "assistant", "content": "a"},
                                                               {"role": "user", "content": "q"}]}])


def _pair(chosen: str, rejected: str) -> PreferencePair:
    def side(answer: str):  # type: ignore[no-untyped-def]
        from olmo2spec.data.preferences import _response_only

        return _response_only(TOK, [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}])

    return PreferencePair(chosen=side(chosen), rejected=side(rejected))


def test_preference_accuracy_counts_pairs_whose_chosen_answer_is_likelier(plan):
    model = bigram_model(plan, {NL: ord("a"), ord("a"): ord("b"), ord("b"): TOK.eos_id})
    right, wrong = _pair("ab", "ba"), _pair("ba", "ab")
    result = ie.preference_accuracy(model, TOK, [right, right, wrong], 64, TOK.pad_id, batch_pairs=2)
    assert result["n"] == 3 and result["accuracy"] == pytest.approx(2 / 3)
    assert ie.preference_accuracy(model, TOK, [wrong], 64, TOK.pad_id)["margin"] < 0


def test_math_reward_is_the_verifier_score_and_exact_match_of_greedy_answers(plan):
    model = bigram_model(plan, {NL: ord("7"), ord("7"): TOK.eos_id})
    prompts = [{"messages": [{"role": "user", "content": "What is 3 + 4?"}], "answer": "7"},
               {"messages": [{"role": "user", "content": "What is 3 + 5?"}], "answer": "8"}]
    result = ie.math_reward(model, TOK, prompts, 8, "gsm8k", temperature=0.0)
    assert (result["reward"], result["greedy_reward"], result["exact"], result["eos"]) == (0.5, 0.5, 0.5, 1.0)
    # sampled at temperature 1 from a model sure of its "7": the same; from an unsure one, reproducible
    assert ie.math_reward(model, TOK, prompts, 8, "gsm8k", temperature=1.0)["reward"] == 0.5
    unsure = random_model(plan, seed=3, noise=0.1)
    first = ie.math_reward(unsure, TOK, prompts, 8, "gsm8k", samples=3)
    assert first == ie.math_reward(unsure, TOK, prompts, 8, "gsm8k", samples=3) and first["samples"] == 3
    with pytest.raises(EvalDataError, match='held-out math prompt 1: needs "messages"'):
        ie.math_reward(model, TOK, [{"answer": "7"}], 8, "gsm8k")


def test_the_plan_names_each_stage_kinds_held_out_file(plan, tmp_path: Path):
    data = ie.InstructData(plan, tmp_path)
    assert data.tasks == ("chat", "preferences", "math")
    assert data.files["chat"] == tmp_path / "post-training/demo-chat/heldout.jsonl"
    assert data.files["preferences"] == tmp_path / "post-training/demo-preferences/heldout.jsonl"
    assert data.files["math"] == tmp_path / "post-training/demo-math-prompts/heldout.jsonl"
    assert (data.response_len, data.verifier, data.seq_len) == (64, "gsm8k", 256)


def _write_heldout(root: Path) -> None:
    files = {"demo-chat": [_chat("What is 3 + 4?", "7")],
             "demo-preferences": [{"prompt": [{"role": "user", "content": "q"}],
                                   "chosen": [{"role": "assistant", "content": "ab"}],
                                   "rejected": [{"role": "assistant", "content": "ba"}]}],
             "demo-math-prompts": [{"messages": [{"role": "user", "content": "What is 3 + 4?"}], "answer": "7"}]}
    for name, records in files.items():
        path = root / "post-training" / name / "heldout.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_instruct_results_are_cached_per_checkpoint_and_held_out_file(plan, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    _write_heldout(tmp_path / "data")
    save_final(plan, tmp_path / "sft")
    step = latest_complete(tmp_path / "sft")
    assert step is not None
    data = ie.InstructData(plan, tmp_path / "data")
    first = demo_report.cached_instruct(plan, step, data)
    assert set(first) >= {"chat", "preferences", "math", "seconds", "key"}
    calls = []
    monkeypatch.setattr(ie, "evaluate_instruct", lambda *a: calls.append(a) or {"chat": "again"})
    assert demo_report.cached_instruct(plan, step, data) == first and calls == []
    with open(data.files["chat"], "a") as f:  # another held-out file: evaluated again
        f.write(json.dumps(_chat("What is 1 + 1?", "2")) + "\n")
    assert demo_report.cached_instruct(plan, step, data)["chat"] == "again"
    shutil.rmtree(step)  # the run trained again to the same step (its cache kept): another COMPLETE marker
    save_final(plan, tmp_path / "sft", seed=1)
    calls.clear()
    assert demo_report.cached_instruct(plan, step, data)["chat"] == "again" and len(calls) == 1
    data.files["chat"].unlink()
    with pytest.raises(EvalDataError, match=r"heldout\.jsonl not found: rebuild the demo corpus"):
        demo_report.cached_instruct(plan, step, data)


def test_encode_chat_of_a_held_out_prompt_matches_the_prompt_the_eval_renders():
    """The eval prompts as SFT trains: the conversation's ids start with the prompt's."""
    prompt = ie._prompt([{"role": "user", "content": "What is 3 + 4?"}])
    ids = encode_chat(TOK, [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": "7"}]).ids
    encoded = TOK.encode(prompt, allow_special=True)
    assert list(ids[:len(encoded)]) == encoded and len(ids) > len(encoded)
