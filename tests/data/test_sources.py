"""Finding a source's files under ${DATA_ROOT}, and checking their size against the declared count."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

from olmo2spec.data.sources import (
    DataRootError,
    check_declared_counts,
    data_root,
    expand,
    raw_files,
    resolve_patterns,
    source_token_count,
    token_files,
)
from olmo2spec.spec.diagnostics import Severity
from olmo2spec.spec.mixes import SourceSpec


def touch(path, size=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def test_expand_substitutes_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    assert expand("${DATA_ROOT}/web/*.npy", tmp_path) == f"{tmp_path}/web/*.npy"
    assert expand("${DATA_ROOT}/web/*.npy", f"{tmp_path}/") == f"{tmp_path}/web/*.npy"
    assert expand("/abs/web/*.npy") == "/abs/web/*.npy"  # nothing to substitute: no root needed
    monkeypatch.setenv("DATA_ROOT", "/env/root")
    assert expand("${DATA_ROOT}/x.npy") == "/env/root/x.npy"
    assert expand("${DATA_ROOT}/x.npy", "/given") == "/given/x.npy"


def test_expand_without_a_root_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(DataRootError, match=r"source web's paths uses \$\{DATA_ROOT\}.*DATA_ROOT is not set"):
        expand("${DATA_ROOT}/web/*.npy", what="source web's paths")


def test_data_root_order(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/env")
    assert str(data_root("/given", plan_root="/plan")) == "/given"
    assert str(data_root(None, plan_root="/plan")) == "/plan"
    assert str(data_root(None, plan_root="env")) == "/env"
    monkeypatch.delenv("DATA_ROOT")
    assert data_root() is None


def test_resolve_patterns_globs_sorted_files_only_each_once(tmp_path):
    for name in ("b.npy", "a.npy", "c.npy.idx", ".hidden.npy", "sub/d.npy", "sub/deeper/e.npy"):
        touch(tmp_path / "web" / name)
    (tmp_path / "web" / "dir.npy").mkdir()
    found = resolve_patterns(["${DATA_ROOT}/web/*.npy", "${DATA_ROOT}/web/a.npy", "${DATA_ROOT}/missing.npy"],
                             tmp_path)
    assert [p.name for p in found] == ["a.npy", "b.npy"]
    deep = resolve_patterns(["${DATA_ROOT}/web/**/*.npy"], tmp_path)
    assert [p.relative_to(tmp_path / "web").as_posix() for p in deep] == [
        "a.npy", "b.npy", "sub/d.npy", "sub/deeper/e.npy"]
    assert resolve_patterns([], tmp_path) == []


def test_token_and_raw_files_of_a_source(tmp_path):
    touch(tmp_path / "tok" / "web-000.npy", 8)
    touch(tmp_path / "raw" / "web-000.jsonl.gz")
    source = SourceSpec(tokens=2, paths=["${DATA_ROOT}/tok/*.npy"], raw=["${DATA_ROOT}/raw/*.jsonl.gz"])
    assert token_files("web", source, tmp_path) == [tmp_path / "tok" / "web-000.npy"]
    assert raw_files("web", source, tmp_path) == [tmp_path / "raw" / "web-000.jsonl.gz"]


def test_source_token_count_is_bytes_over_4(tmp_path):
    files = [touch(tmp_path / "a.npy", 400), touch(tmp_path / "b.npy", 44), touch(tmp_path / "c.npy")]
    assert source_token_count(files) == 111
    assert source_token_count([]) == 0


def sources_with(tmp_path, declared, actual_tokens):
    touch(tmp_path / "web" / "web-000.npy", 4 * actual_tokens)
    return {"web": SourceSpec(tokens=declared, paths=["${DATA_ROOT}/web/*.npy"])}


@pytest.mark.parametrize(("declared", "actual"), [(1000, 1000), (1000, 990), (1000, 1010)])
def test_declared_counts_within_one_percent_are_fine(tmp_path, declared, actual):
    assert check_declared_counts(sources_with(tmp_path, declared, actual), tmp_path) == []


@pytest.mark.parametrize(("declared", "actual"), [(1000, 989), (1000, 1011), (1000, 500), (1000, 2000)])
def test_declared_counts_further_off_warn_with_both_numbers(tmp_path, declared, actual):
    [problem] = check_declared_counts(sources_with(tmp_path, declared, actual), tmp_path)
    assert problem.severity is Severity.WARNING
    assert problem.source == "web"
    assert f"{actual:,} tokens" in problem.message and f"declared {declared:,}" in problem.message
    assert problem.render().startswith("warning: sources.web: ")


@pytest.mark.parametrize(("declared", "actual"), [(1000, 499), (1000, 2001), (1000, 0), (0, 10)])
def test_declared_counts_under_half_or_over_twice_are_errors(tmp_path, declared, actual):
    [problem] = check_declared_counts(sources_with(tmp_path, declared, actual), tmp_path)
    assert problem.severity is Severity.ERROR
    assert f"{actual:,} tokens" in problem.message


def test_declared_counts_without_files_say_nothing(tmp_path, monkeypatch):
    sources = {"web": SourceSpec(tokens=1000, paths=["${DATA_ROOT}/web/*.npy"])}
    assert check_declared_counts(sources, tmp_path) == []
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(DataRootError):
        check_declared_counts(sources)


def test_declared_counts_accept_a_plan_and_a_selection(tmp_path):
    from olmo2spec.compiler import check

    plan = check(SPECS / "tiny.toml").plan
    assert check_declared_counts(plan, tmp_path) == []  # nothing prepared yet
    first, second = sorted(plan.sources)[:2]
    for name in (first, second):  # one small token file where each source's first pattern looks
        pattern = expand(plan.sources[name].paths[0], tmp_path)
        touch(Path(pattern.replace("**/", "").replace("*", "x")), 40)
    assert [p.source for p in check_declared_counts(plan, tmp_path)] == [first, second]
    assert [p.severity for p in check_declared_counts(plan, tmp_path, names=[second])] == [Severity.ERROR]
    as_mapping = check_declared_counts(types.SimpleNamespace(sources=dict(plan.sources)), tmp_path)
    assert as_mapping == check_declared_counts(plan, tmp_path)
    with pytest.raises(TypeError):
        check_declared_counts(42, tmp_path)


def test_sources_imports_no_numpy():
    program = ("import sys, olmo2spec.data.sources; "
               "print(','.join(m for m in sys.modules if m.split('.')[0] in {'numpy', 'torch'}))")
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
