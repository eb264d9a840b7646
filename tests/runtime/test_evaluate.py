"""Eval and export stages: greedy decoding, math scoring, held-out loss, results.json, the HF export."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import attrs
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import SPECS  # noqa: E402

from olmo2spec.compiler import check  # noqa: E402
from olmo2spec.data.tokenizer import load_tokenizer  # noqa: E402
from olmo2spec.exitcodes import ExitCode  # noqa: E402
from olmo2spec.plan.plan import Plan  # noqa: E402
from olmo2spec.runtime import evaluate as ev  # noqa: E402
from olmo2spec.runtime.bundle import load_run  # noqa: E402
from olmo2spec.runtime.checkpoint import Checkpointer  # noqa: E402
from olmo2spec.runtime.export_stage import run_export_stage  # noqa: E402
from olmo2spec.runtime.model import ModelArgs, Transformer  # noqa: E402

SMALL = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.mlp_hidden=96"]
TOK = load_tokenizer("bytes")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return check(SPECS / "tiny.toml", SMALL).plan


def random_model(plan: Plan, seed: int = 0, noise: float = 0.0, max_seq_len: int | None = None) -> Transformer:
    torch.manual_seed(seed)
    args = ModelArgs.from_plan(plan)
    model = Transformer(attrs.evolve(args, max_seq_len=max_seq_len or args.max_seq_len))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model.eval()


def bigram_model(plan: Plan, chain: dict[int, int]) -> Transformer:
    """A model whose next token depends only on the current one: `chain[t]` after t.

    The blocks add nothing (zero output projections), so the final state is the token's embedding;
    the head row of `chain[t]` is that embedding, which wins the argmax by far.
    """
    model = random_model(plan)
    with torch.no_grad():
        for block in model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.embed_tokens.weight.normal_()
        model.lm_head.weight.zero_()
        for t, nxt in chain.items():
            model.lm_head.weight[nxt] += model.embed_tokens.weight[t]
    return model


def reference_greedy(model: Transformer, prompt: str, n: int) -> str:
    """Greedy decoding without a cache: the whole forward again at every step."""
    ids, out = TOK.encode(prompt), []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids]))[0, -1]
            logits[TOK.vocab_size:] = float("-inf")
            logits[TOK.pad_id] = float("-inf")
            token = int(logits.argmax())
            if token == TOK.eos_id:
                break
            ids.append(token)
            out.append(token)
    return TOK.decode(out)


def save_final(plan: Plan, run_dir: Path, step: int = 0, seed: int = 0, final: bool = True) -> None:
    model = random_model(plan, seed)
    with warnings.catch_warnings():  # DCP without a process group
        warnings.simplefilter("ignore")
        Checkpointer(run_dir, keep_last=2, permanent_every=0).save(
            step, model, torch.optim.AdamW(model.parameters()), {"run": run_dir.name}, final=final)


# --- greedy decoding ----------------------------------------------------------------------------------------------


PROMPTS = ["What is 77 times 14?", "Hi", "A train travels at 60 miles per hour for 3 hours.", "", "x"]


def test_batched_cached_greedy_decoding_equals_recomputing_every_step_and_is_deterministic(plan):
    model = random_model(plan, seed=1, noise=0.3)
    expected = [reference_greedy(model, p, 24) for p in PROMPTS[:3]]
    got = ev.greedy_answers(model, TOK, PROMPTS[:3], 24, stop=None, batch_size=2)
    assert got == expected
    assert ev.greedy_answers(model, TOK, PROMPTS[:3], 24, stop=None, batch_size=8) == expected
    assert ev.greedy_answers(model, TOK, PROMPTS[::-1], 24, stop=None)[::-1][:3] == expected


def test_past_the_context_the_cache_slides_instead_of_failing(plan):
    model = random_model(plan, seed=2, noise=0.3, max_seq_len=16)
    long = ev.greedy_answers(model, TOK, ["a prompt longer than sixteen bytes", "ab"], 40, stop=None)
    assert all(long)
    assert long == ev.greedy_answers(model, TOK, ["a prompt longer than sixteen bytes", "ab"], 40, stop=None)


def test_decoding_stops_at_a_newline_at_eos_and_at_the_cap(plan):
    a, b, c, nl, x, y = (ord(ch) for ch in "abc\nxy")
    model = bigram_model(plan, {a: b, b: c, c: nl, nl: a, x: y, y: TOK.eos_id})
    assert ev.greedy_answers(model, TOK, ["a", "zzx", "b"], 50) == ["bc", "y", "c"]
    assert ev.greedy_answers(model, TOK, ["a"], 50, stop=None) == [("bc\n" + "abc\n" * 20)[:50]]
    assert ev.greedy_answers(model, TOK, ["a"], 2) == ["bc"]
    assert ev.greedy_answers(model, TOK, ["a"], 5, stop=None) == ["bc\nab"]
    assert ev.greedy_answers(model, TOK, ["a"], 20, eos=c, stop=None) == ["b"]


def test_the_stop_pattern_cuts_before_its_group():
    assert ev._cut("Each day 3 * 4 = 12.\n#### 12\nMore", ev.AFTER_ANSWER_LINE) == "Each day 3 * 4 = 12.\n#### 12"
    assert ev._cut("Each day 3 * 4 = 12.\n#### 1", ev.AFTER_ANSWER_LINE) is None
    assert ev._cut("7 + 8 = 15.\nWhat", ev.NEWLINE) == "7 + 8 = 15."


# --- math scoring ---------------------------------------------------------------------------------------------------


def test_math_accuracy_scores_the_answer_however_it_is_written():
    outputs = {"q0": "1078", "q1": "1,078.", "q2": "the answer is 1078", "q3": "#### 1078", "q4": "107"}
    items = [{"id": f"i{i}", "question": f"q{i}", "answer": "1078", "kind": "arithmetic"} for i in range(5)]
    calls = []

    def fake(prompts, max_new, stop):
        calls.append((list(prompts), max_new, stop))
        return [outputs[p.strip()] for p in prompts]

    accuracy, details = ev.math_accuracy(None, None, items, generate=fake)
    assert accuracy == pytest.approx(0.8)
    assert [d["correct"] for d in details] == [True, True, True, True, False]
    assert [d["predicted"] for d in details] == ["1078", "1078", "1078", "1078", "107"]
    assert calls == [(["q0 ", "q1 ", "q2 ", "q3 ", "q4 "], ev.ARITHMETIC_NEW_TOKENS, ev.NEWLINE)]


@pytest.mark.parametrize(("text", "kind", "expected"), [
    (" 77 * 14 = 1078.", "arithmetic", "1078"),
    (" 12 + 46 = 58, so the answer is 58.", "arithmetic", "58"),
    (" The answer is 71.", "arithmetic", "71"),
    ("Each day he earns 22 * 3 = 66 dollars.\nIn 7 days he earns 66 * 7 = 462 dollars.\n#### 462", "word_problem",
     "462"),
    ("Each day he earns 22 * 3 = 66 dollars.\nIn 7 days he earns 66 * 7 = 462", "word_problem", "462"),
    ("She has 3 * 4 = 12 pens.\nThe answer is 12.", "word_problem", "12"),
    (" 1,234,567 and 3", "arithmetic", "1234567"),
    (" no number", "arithmetic", None),
])
def test_the_answer_is_taken_where_the_training_text_puts_it(text, kind, expected):
    assert ev.extract_answer(text, kind) == expected


def test_prompts_follow_the_training_text():
    arithmetic = {"question": "What is 77 times 14?", "answer": "1078", "kind": "arithmetic"}
    word = {"question": "Sam has 3 pens. How many?", "answer": "3", "kind": "word_problem"}
    assert ev.math_prompt(arithmetic, "base")[0] == "What is 77 times 14? "
    assert ev.math_prompt(word, "base")[:2] == ("Sam has 3 pens. How many?\n", ev.WORD_PROBLEM_NEW_TOKENS)
    assert ev.math_prompt(word, "chat")[0] == "<|endoftext|><|user|>\nSam has 3 pens. How many?\n<|assistant|>\n"
    assert ev.answers_match("1078.0", "1078") and not ev.answers_match("107", "1078")
    with pytest.raises(ev.EvalError):
        ev.math_prompt(word, "fancy")


# --- held-out loss --------------------------------------------------------------------------------------------------


def test_heldout_loss_of_a_random_model_is_near_uniform_and_counts_every_token(plan):
    model = random_model(plan)
    docs = {"web": ["Some held-out prose. " * 30, "More of it."], "code": ["def f(x):\n    return x\n"]}
    losses = ev.heldout_loss(model, TOK, docs, seq_len=64, batch=3)
    assert set(losses) == {"web", "code"}
    for loss in losses.values():
        assert abs(loss - math.log(plan.tokenizer.embedding_rows)) < 0.1
    ids = torch.tensor([[*TOK.encode(docs["code"][0]), TOK.eos_id]])
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(model(ids)[0, :-1], ids[0, 1:])
    assert losses["code"] == pytest.approx(float(direct), rel=1e-5)


# --- the stages -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny bundle (small model), the demo corpus, a checkpoint root."""
    from olmo2spec.data.demo import build_demo_corpus
    from olmo2spec.emit.bundle import build_bundle

    root = tmp_path_factory.mktemp("evaluate")
    build_demo_corpus(root / "data")
    build_bundle(check(SPECS / "tiny.toml", SMALL), root / "bundle", "tiny.toml")
    return root


def test_the_eval_stage_writes_dev_and_heldout_results_apart(demo, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DATA_ROOT", str(demo / "data"))
    monkeypatch.setenv("CHECKPOINT_ROOT", str(demo / "ckpt"))
    monkeypatch.setenv("OLMO2SPEC_DEVICE", "cpu")
    monkeypatch.setattr(ev, "WORD_PROBLEM_NEW_TOKENS", 24)  # a random model never ends: keep the test short
    ctx = load_run(demo / "bundle", "eval-base", None)
    assert ev.run_eval_stage(ctx) == ExitCode.CHECKPOINT  # no soup yet
    assert "soup has no complete checkpoint" in capsys.readouterr().err
    save_final(ctx.plan, demo / "ckpt" / "soup")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))  # no demo corpus there
    assert ev.run_eval_stage(ctx) == ExitCode.DATA
    assert "not found: build the demo corpus there" in capsys.readouterr().err
    monkeypatch.setenv("DATA_ROOT", str(demo / "data"))
    assert ev.run_eval_stage(ctx) == 0
    out = demo / "ckpt" / "eval-base" / "soup"
    results = json.loads((out / "results.json").read_text())
    assert results["target"] == "soup" and results["prompt_format"] == "base"
    assert set(results["dev"]) == {"demo-math-dev", "demo-heldout-loss"}
    assert set(results["heldout"]) == {"demo-math-heldout"}
    assert results["dev"]["demo-math-dev"]["n"] == 200 and results["heldout"]["demo-math-heldout"]["n"] == 500
    assert 0.0 <= results["heldout"]["demo-math-heldout"]["accuracy"] <= 0.05
    losses = results["dev"]["demo-heldout-loss"]
    assert set(losses) == {"web", "code"}
    assert all(abs(v - math.log(384)) < 0.2 for v in losses.values())
    answers = json.loads((out / "demo-math-heldout.json").read_text())
    assert len(answers) == 500 and {"continuation", "predicted", "correct"} <= set(answers[0])
    printed = capsys.readouterr().out
    assert "held-out: demo-math-heldout" in printed and "dev: loss web" in printed

    # any final checkpoint, a few items
    result = ev.evaluate_checkpoint(ctx.plan, demo / "ckpt" / "soup", demo / "data", limit=5)
    assert result["demo-math-dev"]["n"] == 5 and result["step"] == 0


def test_an_unfinished_target_is_refused(demo, monkeypatch, capsys):
    monkeypatch.setenv("DATA_ROOT", str(demo / "data"))
    monkeypatch.setenv("CHECKPOINT_ROOT", str(demo / "ckpt-unfinished"))
    ctx = load_run(demo / "bundle", "eval-instruct", None)
    save_final(ctx.plan, demo / "ckpt-unfinished" / "rlvr", step=5, final=False)
    assert ev.run_eval_stage(ctx) == ExitCode.CHECKPOINT
    assert "rlvr has not finished" in capsys.readouterr().err
    assert ev._producer(ctx.plan, "rlvr") == "rlvr"


def test_the_export_stage_writes_a_hugging_face_directory(demo, monkeypatch, capsys):
    monkeypatch.setenv("CHECKPOINT_ROOT", str(demo / "ckpt-export"))
    ctx = load_run(demo / "bundle", "export", None)
    assert run_export_stage(ctx) == ExitCode.CHECKPOINT
    assert "rlvr has no complete checkpoint" in capsys.readouterr().err
    save_final(ctx.plan, demo / "ckpt-export" / "rlvr", step=3, final=False)
    assert run_export_stage(ctx) == ExitCode.CHECKPOINT
    assert "not final" in capsys.readouterr().err
    save_final(ctx.plan, demo / "ckpt-export" / "rlvr", step=4)
    assert run_export_stage(ctx) == 0
    out = demo / "ckpt-export" / "export" / "hf"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "olmo2" and config["hidden_size"] == 64
    assert (out / "model.safetensors").is_file()
    assert str(out) in capsys.readouterr().out


def test_an_olmes_suite_exports_its_targets_and_says_how_to_run_olmes(demo, tmp_path, monkeypatch, capsys):
    from olmo2spec.emit.bundle import build_bundle

    build_bundle(check(SPECS / "tiny.toml", [*SMALL, "stages.eval-base.suite=olmes-base"]), tmp_path / "b", "tiny.toml")
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path / "ckpt"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-olmes"))
    ctx = load_run(tmp_path / "b", "eval-base", None)
    save_final(ctx.plan, tmp_path / "ckpt" / "soup")
    assert ev.run_eval_stage(ctx) == 0
    assert json.loads((tmp_path / "ckpt" / "soup" / "hf" / "config.json").read_text())["model_type"] == "olmo2"
    printed = capsys.readouterr().out
    assert re.search(r"bash \S+/eval/olmes\.sh eval-base", printed)
