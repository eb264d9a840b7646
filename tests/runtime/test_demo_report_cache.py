"""demo-report's per-run cache (demo-results.json): a damaged one is recomputed, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

import olmo2spec.runtime.evaluate as evaluate
from olmo2spec.runtime.checkpoint import COMPLETE, step_dir
from olmo2spec.runtime.demo_report import demo_rows

RESULT = {"demo-heldout-loss": {"web": 1.0}, "demo-math-dev": {"accuracy": 0.5}, "demo-math-heldout": {"accuracy": 0.5}}


@pytest.mark.parametrize("cache", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"], ids=["bad JSON", "empty", "a list",
                                                                                   "not UTF-8"])
def test_a_damaged_cache_is_recomputed(plans, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: bytes):
    plan = plans["tiny"]
    run = plan.stage("pretrain").runs[0].name
    step = step_dir(tmp_path / run, 8)
    step.mkdir(parents=True)
    (step / COMPLETE).write_text("{}")
    (tmp_path / run / "demo-results.json").write_bytes(cache)
    calls = []

    def fake(plan, path, data_root, limit, prompt_format="base"):  # type: ignore[no-untyped-def]
        calls.append(path)
        return RESULT

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake)
    rows = demo_rows(plan, tmp_path, tmp_path, limit=None)
    assert calls == [step]
    assert rows[0]["label"] == "pretrained" and rows[0]["demo-math-dev"] == {"accuracy": 0.5}
    assert json.loads((tmp_path / run / "demo-results.json").read_text())["checkpoint"] == str(step)
    assert [p.name for p in (tmp_path / run).iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_checkpoint_saved_again_at_the_same_step_is_evaluated_again(plans, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """The cache is keyed on the step's COMPLETE marker (which chains to every file's checksum), not its path:
    a run trained again to the same step number is evaluated again; an unchanged one is not."""
    plan = plans["tiny"]
    run = plan.stage("pretrain").runs[0].name
    step = step_dir(tmp_path / run, 8)
    step.mkdir(parents=True)
    (step / COMPLETE).write_text(json.dumps({"step": 8, "final": True, "checksums": "a" * 64}))
    calls = []

    def fake(plan, path, data_root, limit, prompt_format="base"):  # type: ignore[no-untyped-def]
        calls.append(path)
        return RESULT

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake)
    demo_rows(plan, tmp_path, tmp_path, limit=None)
    demo_rows(plan, tmp_path, tmp_path, limit=None)
    assert calls == [step]
    (step / COMPLETE).write_text(json.dumps({"step": 8, "final": True, "checksums": "b" * 64}))
    demo_rows(plan, tmp_path, tmp_path, limit=None)
    assert calls == [step, step]


def test_post_trained_rows_are_prompted_in_chat_and_gain_instruct_numbers(plans, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    import olmo2spec.runtime.demo_report as demo_report
    import olmo2spec.runtime.instruct_eval as instruct_eval

    plan = plans["tiny"]
    for run in ("soup", "sft"):
        step = step_dir(tmp_path / run, 4)
        step.mkdir(parents=True)
        (step / COMPLETE).write_text("{}")
    for name in ("demo-chat", "demo-preferences", "demo-math-prompts"):
        (tmp_path / "post-training" / name).mkdir(parents=True)
        (tmp_path / "post-training" / name / "heldout.jsonl").write_text("{}\n")
    formats = {}

    def fake(plan, path, data_root, limit, prompt_format="base"):  # type: ignore[no-untyped-def]
        formats[path.parent.name] = prompt_format
        return RESULT

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", fake)
    monkeypatch.setattr(evaluate, "load_model", lambda plan, path: path)
    monkeypatch.setattr(instruct_eval, "evaluate_instruct", lambda plan, model, data: {"chat": {"format": 1.0}})
    rows = {r["label"]: r for r in demo_report.demo_rows(plan, tmp_path, tmp_path)}
    assert formats == {"soup": "base", "sft": "chat"}
    assert rows["soup of 2"]["instruct"]["chat"] == {"format": 1.0} and "from" not in rows["soup of 2"]
    assert rows["sft"]["from"] == "soup" and rows["sft"]["kind"] == "sft"
    assert (tmp_path / "sft" / "demo-instruct-results.json").exists()


def test_before_post_training_the_soup_gets_no_instruct_numbers(plans, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    from olmo2spec.runtime.demo_report import demo_rows

    step = step_dir(tmp_path / "soup", 4)
    step.mkdir(parents=True)
    (step / COMPLETE).write_text("{}")
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: RESULT)
    (row,) = demo_rows(plans["tiny"], tmp_path, tmp_path)  # no held-out files needed either
    assert row["label"] == "soup of 2" and "instruct" not in row
