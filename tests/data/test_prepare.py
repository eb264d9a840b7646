"""The prepare stage: raw JSONL to filtered token files, resumable, atomic, deterministic."""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import attrs
import numpy as np
import pytest
from conftest import ROOT

import olmo2spec.data.prepare as prep
from olmo2spec.data.prepare import PrepareError, output_dir, output_name, prepare, report_path
from olmo2spec.data.tokenfile import index_path, read_doc_ends, read_tokens
from olmo2spec.exitcodes import ExitCode
from olmo2spec.plan.plan import Plan, PrepareStagePlan
from olmo2spec.spec.mixes import SourceSpec

EOS = 256

SPEC = """\
extends = "{base}"

[recipe]
name = "prepare-test"
seed = 1

[model]
d_model = 64
n_layers = 1
n_heads = 1
n_kv_heads = 1
mlp_hidden = 128
max_seq_len = 64

[tokenizer]
name = "bytes"
vocab_size = 258
embedding_rows = 384
eos_id = 256
pad_id = 257

[cluster]
gpu = "cpu"
nodes = 1
gpus_per_node = 1

[sources.web]
category = "web"
tokens = {web_tokens}
paths = ["${{DATA_ROOT}}/tok/web/*.npy"]
raw = ["${{DATA_ROOT}}/raw/web/*.jsonl*"]

[sources.code]
category = "code"
tokens = {code_tokens}
paths = ["${{DATA_ROOT}}/tok/code/*.npy"]
raw = ["${{DATA_ROOT}}/raw/code/*.jsonl.gz"]

[mixes.both]
source_pct = {{ web = 100, code = 100 }}

[[stages]]
name = "prepare"
kind = "prepare"

[[stages]]
name = "pretrain"
kind = "pretrain"
from = "prepare"
mix = "both"
steps = 1
batch_size = 2
seq_len = 32
lr = {{ schedule = "cosine", peak = 1e-3, warmup_steps = 0, horizon = "64", final = 0.1 }}
"""

NGRAM_DOC = "intro " + "ab" * 40 + " outro"  # the 2-gram "ab" 40 times in a row: dropped
WORDY_CODE = "x = x + x + x\ny = 1\n"  # x is 4 of 6 words: dropped in code, kept in web


def write_spec(directory: Path, web_tokens: int = 100, code_tokens: int = 100) -> Path:
    spec = directory / "spec.toml"
    base = os.path.relpath(ROOT / "specs" / "base" / "olmo2.toml", directory)  # recipes name files relatively
    spec.write_text(SPEC.format(base=base, web_tokens=web_tokens, code_tokens=code_tokens))
    return spec


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory) -> Plan:
    from olmo2spec.compiler import check

    return check(write_spec(tmp_path_factory.mktemp("spec"))).plan


def stage_of(plan: Plan) -> PrepareStagePlan:
    stage = plan.stage("prepare")
    assert isinstance(stage, PrepareStagePlan)
    return stage


def with_sources(plan: Plan, sources: dict[str, SourceSpec], **stage_changes) -> tuple[Plan, PrepareStagePlan]:
    stage = attrs.evolve(stage_of(plan), sources=sorted(sources), **stage_changes)
    return attrs.evolve(plan, sources=sources, stages=[stage]), stage


def write_jsonl(path: Path, lines: list[object]) -> Path:
    """One line per item: dicts as JSON, strings as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


WEB_0 = ["The first web document.", NGRAM_DOC, WORDY_CODE, "", "Second kept one: é, 漢字."]
WEB_1 = ["Another web file, plain text JSONL.", "short"]
CODE_0 = ["def add(left, right):\n    total = left + right\n    return total\n", WORDY_CODE, "z"]


@pytest.fixture
def corpus(tmp_path, base_plan):
    """A tiny corpus: web-000 (gzip) and web-001 (plain, with blank lines), code-000 (gzip)."""
    root = tmp_path / "data"
    write_jsonl(root / "raw" / "web" / "web-000.jsonl.gz", [{"text": t, "id": i} for i, t in enumerate(WEB_0)])
    write_jsonl(root / "raw" / "web" / "web-001.jsonl", ["", {"text": WEB_1[0]}, "   ", {"text": WEB_1[1]}, ""])
    write_jsonl(root / "raw" / "code" / "code-000.jsonl.gz", [{"text": t} for t in CODE_0])
    return root, base_plan, stage_of(base_plan)


def expected_tokens(texts: list[str]) -> list[int]:
    return [t for text in texts for t in [*text.encode("utf-8"), EOS]]


def outputs(root: Path) -> dict[str, bytes]:
    """Every file under tok/ (token files, indexes, reports), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "tok").rglob("*")) if p.is_file()}


def test_token_files_hold_the_kept_documents_each_followed_by_eos(corpus):
    root, plan, stage = corpus
    report = prepare(plan, stage, root, workers=1)
    web0 = root / "tok" / "web" / "web-000.npy"
    kept = [WEB_0[0], WEB_0[2], WEB_0[4]]  # NGRAM_DOC dropped, the empty text dropped, WORDY_CODE kept in web
    assert read_tokens(web0).tolist() == expected_tokens(kept)
    assert read_doc_ends(web0).tolist() == np.cumsum([len(t.encode()) + 1 for t in kept]).tolist()
    web1 = root / "tok" / "web" / "web-001.npy"
    assert read_tokens(web1).tolist() == expected_tokens(WEB_1)  # plain JSONL, blank lines skipped
    code0 = root / "tok" / "code" / "code-000.npy"
    assert read_tokens(code0).tolist() == expected_tokens([CODE_0[0]])  # WORDY_CODE and "z" dropped in code
    assert sorted(p.name for p in (root / "tok" / "web").iterdir()) == [
        "web-000.npy", "web-000.npy.idx", "web-000.npy.report.json",
        "web-001.npy", "web-001.npy.idx", "web-001.npy.report.json"]

    web = report.sources["web"].counts
    assert (web.docs_in, web.docs_out) == (7, 5)
    assert web.dropped_docs == {"repeated_ngrams": 1, "empty": 1}  # the code filter is not applied to web
    assert web.dropped_tokens == {"repeated_ngrams": len(NGRAM_DOC) + 1, "empty": 1}
    assert web.tokens_out == len(expected_tokens(kept + WEB_1))
    assert web.tokens_in == web.tokens_out + sum(web.dropped_tokens.values())
    code = report.sources["code"].counts
    assert (code.docs_in, code.docs_out) == (3, 1)
    assert code.dropped_docs == {"repeated_ngrams": 0, "code_word_frequency": 2, "empty": 0}
    assert report.sources["web"].files == 2 and report.sources["web"].skipped == 0
    assert report.not_prepared == []

    table = report.table()
    assert "code_word_frequency" in table and "total" in table
    assert list(report.to_dict()["sources"]) == ["code", "web"]
    assert report.to_dict()["total"]["docs_out"] == 6


def test_code_filter_only_for_code_sources_and_filters_follow_the_stage(corpus):
    root, plan, stage = corpus
    report = prepare(plan, attrs.evolve(stage, filters=[]), root, workers=1)
    assert report.sources["code"].counts.docs_out == 3
    assert report.sources["web"].counts.dropped_docs == {"empty": 1}
    assert report.filters == ["empty"]



def _count_prepared(monkeypatch) -> list[str]:
    """The raw file names prepare_file is called on from now on (workers=1 runs it in this process)."""
    calls: list[str] = []
    real = prep.prepare_file

    def counting(job, load=None):
        calls.append(job.raw.name)
        return real(job, load)

    monkeypatch.setattr(prep, "prepare_file", counting)
    return calls

def test_resume_redoes_only_missing_or_changed_files(corpus, monkeypatch):
    root, plan, stage = corpus
    first = prepare(plan, stage, root, workers=1)
    before = outputs(root)
    calls = _count_prepared(monkeypatch)
    again = prepare(plan, stage, root, workers=1)
    assert calls == []
    assert again.to_dict()["sources"]["web"]["skipped"] == 2
    assert again.total() == first.total()

    (root / "tok" / "web" / "web-001.npy").unlink()
    third = prepare(plan, stage, root, workers=1)
    assert calls == ["web-001.jsonl"]
    assert outputs(root) == before
    assert third.total() == first.total()
    assert third.sources["web"].skipped == 1

    calls.clear()
    report_path(root / "tok" / "code" / "code-000.npy").unlink()  # token file there, but never finished
    (root / "tok" / "web" / "web-000.npy.idx").write_bytes(b"")  # an index that does not match
    prepare(plan, stage, root, workers=1)
    assert sorted(calls) == ["code-000.jsonl.gz", "web-000.jsonl.gz"]
    assert outputs(root) == before

    calls.clear()
    raw = root / "raw" / "web" / "web-001.jsonl"
    write_jsonl(raw, [{"text": "changed"}])
    prepare(plan, stage, root, workers=1)
    assert calls == ["web-001.jsonl"]
    assert read_tokens(root / "tok" / "web" / "web-001.npy").tolist() == expected_tokens(["changed"])

    calls.clear()
    prepare(plan, attrs.evolve(stage, filters=["repeated_ngrams"]), root, workers=1)  # web's filters unchanged
    assert calls == ["code-000.jsonl.gz"]
    calls.clear()
    prepare(plan, attrs.evolve(stage, filters=[]), root, workers=1)  # every file's filters changed
    assert len(calls) == 3


class FailingTokenizer:
    eos_id = EOS

    def encode_batch(self, texts, num_threads=1):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("tokenizer crashed")
        return [list(t.encode()) for t in texts]


def load_failing(name):
    return FailingTokenizer()


def test_a_failure_mid_file_leaves_no_partial_output(corpus, monkeypatch):
    root, plan, stage = corpus
    monkeypatch.setattr(prep, "_BATCH_DOCS", 1)  # the failure comes after documents were written
    write_jsonl(root / "raw" / "web" / "web-001.jsonl", [{"text": "fine"}, {"text": "fine too"}, {"text": "BOOM"}])
    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        prepare(plan, attrs.evolve(stage, sources=["web"]), root, workers=1, load=load_failing)
    left = sorted(p.name for p in (root / "tok" / "web").iterdir())
    assert left == ["web-000.npy", "web-000.npy.idx", "web-000.npy.report.json"]  # web-001: nothing, not even tmp

    # a stale temporary file of a killed run is cleaned up when the file is redone
    (root / "tok" / "web" / ".web-001.npy.tmp-99999").write_bytes(b"junk")
    prepare(plan, attrs.evolve(stage, sources=["web"]), root, workers=1)
    assert not list((root / "tok" / "web").glob(".*"))
    assert read_tokens(root / "tok" / "web" / "web-001.npy").tolist() == expected_tokens(
        ["fine", "fine too", "BOOM"])


def test_a_failed_redo_keeps_the_file_incomplete(corpus, monkeypatch):
    root, plan, stage = corpus
    prepare(plan, stage, root, workers=1)
    write_jsonl(root / "raw" / "web" / "web-001.jsonl", [{"text": "BOOM"}])
    with pytest.raises(RuntimeError):
        prepare(plan, stage, root, workers=1, load=load_failing)
    assert not report_path(root / "tok" / "web" / "web-001.npy").exists()  # the old output is not complete any more


def test_same_bytes_at_any_worker_count(corpus, tmp_path):
    root, plan, stage = corpus
    for i in range(5):  # more files than workers
        write_jsonl(root / "raw" / "web" / f"web-1{i:02d}.jsonl.gz",
                    [{"text": f"doc {j} of file {i} " * (j % 7)} for j in range(50)] + [{"text": NGRAM_DOC}])
    one = prepare(plan, stage, root, workers=1)
    first = outputs(root)
    for path in (root / "tok").rglob("*"):
        if path.is_file():
            path.unlink()
    two = prepare(plan, stage, root, workers=2)
    assert outputs(root) == first
    assert one.to_dict() == two.to_dict()


def load_dying(name):
    os._exit(9)


def test_a_dead_worker_is_a_clear_error(corpus):
    root, plan, stage = corpus
    with pytest.raises(PrepareError, match="a worker process died"):
        prepare(plan, stage, root, workers=2, load=load_dying)
    assert not list((root / "tok").rglob("*.npy"))


def test_progress_bar_ticks_per_file_on_stderr_when_forced(corpus, capsys):
    root, plan, stage = corpus
    prepare(plan, stage, root, workers=1, progress=True)
    err = capsys.readouterr().err
    assert "prepare" in err and "3/3" in err
    prepare(plan, stage, root, workers=1)  # stderr is not a terminal here: no bar
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "unterminated', r"web-000\.jsonl:3: not a JSON line"),
    ('["a list"]', r"web-000\.jsonl:3: a JSON list, not an object"),
    ('{"body": "x"}', r"web-000\.jsonl:3: no 'text' field .*fields: body"),
    ('{"text": 42}', r"web-000\.jsonl:3: 'text' is a JSON int, not a string"),
    (b"\xff\xfe{}", r"web-000\.jsonl:3: not a JSON line"),
])
def test_malformed_lines_name_file_and_line(tmp_path, base_plan, line, message):
    raw = tmp_path / "raw" / "web" / "web-000.jsonl"
    raw.parent.mkdir(parents=True)
    body = line if isinstance(line, bytes) else line.encode()
    raw.write_bytes(b'{"text": "ok"}\n\n' + body + b"\n")
    plan, stage = with_sources(base_plan, {"web": base_plan.sources["web"]})
    with pytest.raises(PrepareError, match=message):
        prepare(plan, stage, tmp_path, workers=1)
    assert not (tmp_path / "tok" / "web" / "web-000.npy").exists()


def test_a_truncated_gzip_file_is_a_clear_error(tmp_path, base_plan):
    raw = write_jsonl(tmp_path / "raw" / "code" / "code-000.jsonl.gz", [{"text": "x" * 1000}] * 100)
    raw.write_bytes(raw.read_bytes()[:-30])
    plan, stage = with_sources(base_plan, {"code": base_plan.sources["code"]})
    with pytest.raises(PrepareError, match=r"code-000\.jsonl\.gz:\d+: cannot decompress"):
        prepare(plan, stage, tmp_path, workers=1)


def test_missing_raw_files_name_the_source(tmp_path, base_plan):
    with pytest.raises(PrepareError, match=r"no raw files match .*/raw/code/\*\.jsonl\.gz for source code"):
        prepare(base_plan, stage_of(base_plan), tmp_path, workers=1)


def test_sources_without_raw_are_not_prepared(corpus):
    root, plan, _ = corpus
    sources = {**plan.sources, "ready": SourceSpec(tokens=1, paths=["${DATA_ROOT}/ready/*.npy"])}
    plan, stage = with_sources(plan, sources)
    report = prepare(plan, stage, root, workers=1)
    assert report.not_prepared == ["ready"]
    assert "not prepared (no raw files declared): ready" in report.table()
    plan, stage = with_sources(plan, {"ready": sources["ready"]})
    with pytest.raises(PrepareError, match="nothing to prepare"):
        prepare(plan, stage, root, workers=1)


def test_outputs_the_paths_would_not_find_are_refused(corpus):
    root, plan, _ = corpus
    web = attrs.evolve(plan.sources["web"], paths=["${DATA_ROOT}/tok/web/part-*.npy"])
    plan2, stage = with_sources(plan, {"web": web})
    with pytest.raises(PrepareError, match=r"web-000\.npy, which its paths .* do not match"):
        prepare(plan2, stage, root, workers=1)
    code = attrs.evolve(plan.sources["code"], paths=["${DATA_ROOT}/tok/web/*.npy"],
                        raw=["${DATA_ROOT}/raw/web/web-000.jsonl.gz"])
    plan3, stage = with_sources(plan, {"web": plan.sources["web"], "code": code})
    with pytest.raises(PrepareError, match=r"would both be written to .*web-000\.npy"):
        prepare(plan3, stage, root, workers=1)


def test_a_tokenizer_with_another_eos_is_refused(corpus):
    root, plan, stage = corpus
    plan = attrs.evolve(plan, tokenizer=attrs.evolve(plan.tokenizer, eos_id=0))
    with pytest.raises(PrepareError, match="eos id 256, the plan says 0"):
        prepare(plan, stage, root, workers=1)


def test_output_names_and_directories():
    assert output_name(Path("/r/web-000.jsonl.gz")) == "web-000.npy"
    assert output_name(Path("/r/web-000.jsonl")) == "web-000.npy"
    assert output_name(Path("/r/a.json.gz")) == "a.npy"
    assert output_name(Path("/r/data")) == "data.npy"
    assert output_dir("/d/tok/web/*.npy") == Path("/d/tok/web")
    assert output_dir("/d/tok/web-*.npy") == Path("/d/tok")
    assert output_dir("/d/tok/[ab]/x.npy") == Path("/d/tok")
    assert output_dir("/d/tok/one.npy") == Path("/d/tok")
    assert output_dir(glob.escape("/d/runs [v2] *?") + "/tok/*.npy") == Path("/d/runs [v2] *?/tok")


# --- the runtime: python -m olmo2spec.runtime run --stage prepare ----------------------------------------------------


def run_stage(bundle: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATA_ROOT", "CHECKPOINT_ROOT"}}
    return subprocess.run([sys.executable, "-m", "olmo2spec.runtime", "run", "--bundle", str(bundle),
                           "--stage", "prepare"], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def build(tmp_path: Path, **tokens: int) -> Path:
    from olmo2spec.compiler import check
    from olmo2spec.emit.bundle import build_bundle

    bundle = tmp_path / "bundle"
    build_bundle(check(write_spec(tmp_path, **tokens)), bundle, "spec")
    return bundle


def test_runtime_runs_the_prepare_stage_end_to_end(corpus, tmp_path):
    root, _, _ = corpus
    # declared counts as the files will hold them: no warnings
    bundle = build(tmp_path, web_tokens=len(expected_tokens([WEB_0[i] for i in (0, 2, 4)] + WEB_1)),
                   code_tokens=len(expected_tokens([CODE_0[0]])))
    checkpoints = tmp_path / "ckpt"
    result = run_stage(bundle, {"DATA_ROOT": str(root), "CHECKPOINT_ROOT": str(checkpoints)})
    assert result.returncode == 0, result.stderr
    assert "repeated_ngrams" in result.stdout and "total" in result.stdout
    assert result.stderr == ""  # no progress bar off a terminal, no warnings
    saved = json.loads((checkpoints / "prepare" / "prepare-report.json").read_text())
    assert saved["sources"]["web"]["docs_out"] == 5 and saved["sources"]["code"]["docs_out"] == 1
    assert read_tokens(root / "tok" / "code" / "code-000.npy").tolist() == expected_tokens([CODE_0[0]])

    again = run_stage(bundle, {"DATA_ROOT": str(root), "CHECKPOINT_ROOT": str(checkpoints)})
    assert again.returncode == 0, again.stderr
    assert json.loads((checkpoints / "prepare" / "prepare-report.json").read_text())["sources"]["web"]["skipped"] == 2


def test_runtime_reports_expected_problems_without_a_traceback(tmp_path, corpus):
    root, _, _ = corpus
    bundle = build(tmp_path, web_tokens=10_000)
    unset = run_stage(bundle, {})
    assert unset.returncode == ExitCode.DATA
    assert "DATA_ROOT is not set" in unset.stderr and "Traceback" not in unset.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_stage(bundle, {"DATA_ROOT": str(empty), "CHECKPOINT_ROOT": str(tmp_path / "c")})
    assert missing.returncode == ExitCode.DATA
    assert "no raw files match" in missing.stderr and "for source code" in missing.stderr
    assert "Traceback" not in missing.stderr

    far_off = run_stage(bundle, {"DATA_ROOT": str(root), "CHECKPOINT_ROOT": str(tmp_path / "c")})
    assert far_off.returncode == ExitCode.DATA
    assert "error: sources.web:" in far_off.stderr and "declared 10,000" in far_off.stderr
    assert (tmp_path / "c" / "prepare" / "prepare-report.json").exists()


# --- hostile input ----------------------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("workers", [1, 2], ids=["in process", "in workers"])
@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "\\ud800 lone"}', r"web-001\.jsonl:3: 'text' holds a lone surrogate \(\\ud800\), which is not text"),
    ('{"text": "ok", "meta": ' + DEEP + "}", r"web-001\.jsonl:3: not a JSON line: nested too deeply"),
    ('{"text": ' + DEEP + "}", r"web-001\.jsonl:3: not a JSON line: nested too deeply"),
    ('{"text": "unterminated', r"web-001\.jsonl:3: not a JSON line"),
    ('{"text": 42}', r"web-001\.jsonl:3: 'text' is a JSON int, not a string"),
], ids=["lone surrogate", "deep other field", "deep text", "unterminated", "not a string"])
def test_malformed_content_names_file_line_and_fix_from_workers_too(tmp_path, base_plan, line, message, workers):
    write_jsonl(tmp_path / "raw" / "web" / "web-000.jsonl", [{"text": "fine"}])
    raw = tmp_path / "raw" / "web" / "web-001.jsonl"
    raw.write_bytes(b'{"text": "ok"}\n\n' + line.encode() + b"\n")
    plan, stage = with_sources(base_plan, {"web": base_plan.sources["web"]})
    with pytest.raises(PrepareError, match=message) as info:
        prepare(plan, stage, tmp_path, workers=workers)
    assert str(info.value).endswith("fix or remove that line"), info.value
    assert not (tmp_path / "tok" / "web" / "web-001.npy").exists()


def test_glob_characters_in_data_root_are_literal(tmp_path, base_plan):
    from olmo2spec.data.sources import token_files

    root = tmp_path / "runs [v2] *?"
    (root / "raw" / "web").mkdir(parents=True)
    (tmp_path / "runs v").mkdir()  # what `[v2]` would match as a glob: must not be read
    write_jsonl(root / "raw" / "web" / "web-000.jsonl", [{"text": "one"}, {"text": "two"}])
    plan, stage = with_sources(base_plan, {"web": base_plan.sources["web"]})
    report = prepare(plan, stage, root, workers=1)
    assert report.sources["web"].counts.docs_out == 2
    assert report.sources["web"].out_dir == str(root / "tok" / "web")
    assert token_files("web", plan.sources["web"], root) == [root / "tok" / "web" / "web-000.npy"]
    assert read_tokens(root / "tok" / "web" / "web-000.npy").tolist() == expected_tokens(["one", "two"])


def _damage_index_tail(out: Path) -> None:
    index = index_path(out)
    index.write_bytes(index.read_bytes() + b"\x00\x01\x02")  # not a whole entry


def _damage_index_middle(out: Path) -> None:
    ends = read_doc_ends(out).copy()
    ends[0] += 1  # no longer at an eos
    ends.tofile(index_path(out))


def _damage_index_order(out: Path) -> None:
    ends = read_doc_ends(out).copy()
    ends[0] = ends[-1] + 5  # past the end, then back: not increasing
    ends.tofile(index_path(out))


def _damage_tokens(out: Path) -> None:
    data = bytearray(out.read_bytes())
    data[-4:] = (7).to_bytes(4, "little")  # the last eos overwritten: the index no longer matches the file
    out.write_bytes(bytes(data))


def _unblock_later(fifo: Path, blocked: list[Path]) -> threading.Timer:
    """A read blocked on `fifo` gets end of file in 20 s, noted in `blocked`: the test fails instead of hanging."""
    def unblock() -> None:
        with contextlib.suppress(OSError):  # ENXIO when no one is reading: nothing to do
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            blocked.append(fifo)
    timer = threading.Timer(20, unblock)
    timer.daemon = True
    timer.start()
    return timer


def _fifo_report(out: Path) -> None:
    report_path(out).unlink()
    os.mkfifo(report_path(out))  # reading it would block forever


def _fifo_index(out: Path) -> None:
    index_path(out).unlink()
    os.mkfifo(index_path(out))


@pytest.mark.parametrize("damage", [_damage_index_tail, _damage_index_middle, _damage_index_order, _damage_tokens,
                                    _fifo_report, _fifo_index])
def test_a_damaged_output_is_redone_on_resume(corpus, monkeypatch, damage):
    root, plan, stage = corpus
    prepare(plan, stage, root, workers=1)
    before = outputs(root)
    damage(root / "tok" / "web" / "web-000.npy")
    blocked: list[Path] = []
    timers = [_unblock_later(p, blocked) for p in (root / "tok" / "web").iterdir() if p.is_fifo()]
    calls = _count_prepared(monkeypatch)
    report = prepare(plan, stage, root, workers=1)
    for timer in timers:
        timer.cancel()
    assert blocked == []
    assert calls == ["web-000.jsonl.gz"]
    assert report.sources["web"].skipped == 1
    assert outputs(root) == before
