"""The offline demo corpus (`olmo2spec demo-data`): deterministic, correct math, disjoint splits."""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from olmo2spec.data.demo import DemoReport, build_demo_corpus, math_split

MB = 1_000_000


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoReport]:
    root = tmp_path_factory.mktemp("demo") / "data"
    return root, build_demo_corpus(root, seed=0)


@pytest.fixture(scope="module")
def root(built: tuple[Path, DemoReport]) -> Path:
    return built[0]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _raw(root: Path, source: str) -> list[dict[str, Any]]:
    return [d for p in sorted((root / "raw" / source).glob(f"{source}-*.jsonl.gz")) for d in _jsonl(p)]


def _text_bytes(docs: list[dict[str, Any]]) -> int:
    return sum(len(d["text"].encode("utf-8")) for d in docs)


# ---------------------------------------------------------------------------------------------
# an independent checker of the math: parses the text, never calls the generator


OPS: dict[str, Callable[[int, int], int | None]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if b and a % b == 0 else None,
}
WORD_OPS = {"plus": "+", "minus": "-", "times": "*", "divided by": "/"}
EQUATION = re.compile(r"(?<![\d.])(\d+) ([-+*/]) (\d+) = (\d+)(?![\d])")
# (pattern, operator, operand order) of every phrasing of an arithmetic question or statement
ARITH = [
    (re.compile(r"(?<!\d)(\d+) ([-+*/]|plus|minus|times|divided by) (\d+)(?!\d)"), None, (1, 3)),
    (re.compile(r"\bAdd (\d+) and (\d+)\b"), "+", (1, 2)),
    (re.compile(r"\bThe sum of (\d+) and (\d+)\b"), "+", (1, 2)),
    (re.compile(r"\b[Ss]ubtract (\d+) from (\d+)\b"), "-", (2, 1)),
    (re.compile(r"\bMultiply (\d+) by (\d+)\b"), "*", (1, 2)),
    (re.compile(r"\bThe product of (\d+) and (\d+)\b"), "*", (1, 2)),
    (re.compile(r"\bDivide (\d+) by (\d+)\b"), "/", (1, 2)),
]
STATEMENT_RESULT = re.compile(r"(?:equals|is|you get|answer is) (\d+)\.?$")


def solve_arithmetic(question: str) -> tuple[int, str, int, int]:
    """(a, op, b, result) of the first arithmetic phrasing in `question`."""
    for pattern, op, (i, j) in ARITH:
        m = pattern.search(question)
        if m:
            a, b = int(m.group(i)), int(m.group(j))
            o = op or WORD_OPS.get(m.group(2), m.group(2))
            c = OPS[o](a, b)
            assert c is not None and c >= 0, question
            return a, o, b, c
    raise AssertionError(f"no arithmetic in {question!r}")


def family_key(a: int, op: str, b: int, c: int) -> str:
    """The documented split key: fact families, commutative pairs together."""
    if op == "+":
        return f"add:{min(a, b)}:{max(a, b)}"
    if op == "-":
        return f"add:{min(b, c)}:{max(b, c)}"
    if op == "*":
        return f"mul:{min(a, b)}:{max(a, b)}"
    return f"mul:{min(b, c)}:{max(b, c)}"


N = r"(\d+)"
WORD_PROBLEMS: list[tuple[re.Pattern[str], Callable[..., int]]] = [
    (re.compile(rf"buys {N} .+ at {N} dollars each and {N} .+ at {N} dollars each"),
     lambda n1, p1, n2, p2: n1 * p1 + n2 * p2),
    (re.compile(rf"buys {N} .+ that cost {N} dollars each and pays with a {N} dollar bill"),
     lambda n, p, bill: bill - n * p),
    (re.compile(rf"travels at {N} miles per hour for {N} hours, then at {N} miles per hour for {N} hours"),
     lambda s1, t1, s2, t2: s1 * t1 + s2 * t2),
    (re.compile(rf"has {N} boxes with {N} .+ in each box\. .+ equally among {N} friends"),
     lambda b, p, f: b * p // f),
    (re.compile(rf"is {N} years old\. .+ is {N} times as old as .+ is {N} years younger than"),
     lambda x, k, d: x * k - d),
    (re.compile(rf"earns {N} dollars per hour and works {N} hours a day\. .+ in {N} days"),
     lambda w, h, d: w * h * d),
    (re.compile(rf"A book has {N} pages\. .+ reads {N} pages a day for {N} days"),
     lambda p, r, d: p - r * d),
    (re.compile(rf"needs {N} eggs per batch\. .+ bake {N} batches and has {N} eggs"),
     lambda e, b, h: e * b - h),
    (re.compile(rf"plants {N} rows of .+ with {N} in each row\. Rabbits eat {N} of them, and then .+ plants {N} more"),
     lambda r, p, e, m: r * p - e + m),
    (re.compile(rf"saves {N} dollars every week for {N} weeks\. Then .+ spends {N} dollars"),
     lambda s, w, x: s * w - x),
    (re.compile(rf"has {N} [a-z]+\. .+ gets {N} more [a-z]+ every day for {N} days"),
     lambda s, p, d: s + p * d),
]


def solve_word_problem(question: str) -> int:
    matches = [(p, f) for p, f in WORD_PROBLEMS if p.search(question)]
    assert len(matches) == 1, question
    pattern, f = matches[0]
    m = pattern.search(question)
    assert m is not None
    return f(*(int(g) for g in m.groups()))


def check_equations(text: str) -> list[tuple[int, str, int, int]]:
    found = [(int(a), op, int(b), int(c)) for a, op, b, c in EQUATION.findall(text)]
    for a, op, b, c in found:
        assert OPS[op](a, b) == c, f"{a} {op} {b} = {c} in {text!r}"
    return found


def word_problems(docs: list[dict[str, Any]]) -> Iterator[tuple[str, list[str], int]]:
    for d in docs:
        if "\n#### " in d["text"]:
            question, *solution, final = d["text"].split("\n")
            yield question, solution, int(final.removeprefix("#### "))


# ---------------------------------------------------------------------------------------------


def test_layout_and_manifest(root: Path):
    files = _files(root)
    manifest = json.loads(files.pop("MANIFEST.json"))
    assert manifest["seed"] == 0
    assert {e["path"] for e in manifest["files"]} == set(files)
    for entry in manifest["files"]:
        data = files[entry["path"]]
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        content = gzip.decompress(data) if entry["path"].endswith(".gz") else data
        assert entry["content_sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["documents"] == content.count(b"\n") == len(content.splitlines())
    for source in ("web", "code", "math"):
        shards = sorted(p for p in files if p.startswith(f"raw/{source}/"))
        assert shards and all(re.fullmatch(rf"raw/{source}/{source}-\d{{3}}\.jsonl\.gz", p) for p in shards)
    for name in ("eval/math-dev.jsonl", "eval/math-heldout.jsonl", "eval/heldout-text.jsonl",
                 "post-training/demo-chat/train.jsonl", "post-training/demo-preferences/train.jsonl",
                 "post-training/demo-math-prompts/train.jsonl"):
        assert name in files
    assert not [p for p in files if ".tmp" in p]


def test_raw_records_and_report(built: tuple[Path, DemoReport]):
    root, report = built
    for source in ("web", "code", "math"):
        docs = _raw(root, source)
        assert all(set(d) == {"id", "source", "text"} and d["text"] for d in docs)
        assert len({d["id"] for d in docs}) == len(docs)
        row = report.source(f"raw/{source}")
        assert (row.documents, row.text_bytes) == (len(docs), _text_bytes(docs))
        assert row.byte_tokens == row.text_bytes + row.documents
    table = str(report)
    assert "raw/web" in table and "byte tokens" in table and "eval/math-heldout" in table


def test_sizes(root: Path):
    # web is ~2.1 MB with a full CPython 3.11; distributions that split idlelib/tkinter/distutils
    # into separate packages give less, hence the lower bound
    assert 1.5 * MB <= _text_bytes(_raw(root, "web")) <= 3 * MB
    assert 1 * MB <= _text_bytes(_raw(root, "code")) <= 1.5 * MB
    assert 1.1 * MB <= _text_bytes(_raw(root, "math")) <= 1.3 * MB
    assert len(_jsonl(root / "eval/math-dev.jsonl")) == 200
    assert len(_jsonl(root / "eval/math-heldout.jsonl")) == 500
    assert len(_jsonl(root / "post-training/demo-chat/train.jsonl")) == 2000
    assert len(_jsonl(root / "post-training/demo-preferences/train.jsonl")) == 512
    assert len(_jsonl(root / "post-training/demo-math-prompts/train.jsonl")) == 256
    heldout = _jsonl(root / "eval/heldout-text.jsonl")
    assert {d["source"] for d in heldout} == {"web", "code"}
    assert all(set(d) == {"id", "source", "text"} for d in heldout)


CODE_LINE = re.compile(r"^\s*(?:def \w+\(|class \w+.*:\s*$|import \w|from [\w.]+ import |>>>|@\w|return\b|if .*:\s*$)",
                       re.M)


def test_code_is_python_and_web_is_prose(root: Path):
    code = _raw(root, "code")
    for d in code:
        ast.parse(d["text"])  # whole modules that compile
        assert CODE_LINE.search(d["text"]), d["id"]
    assert sum(bool(re.search(r"^def \w+\(", d["text"], re.M)) for d in code) > 0.5 * len(code)
    web = _raw(root, "web") + [d for d in _jsonl(root / "eval/heldout-text.jsonl") if d["source"] == "web"]
    for d in web:
        text = d["text"]
        assert not CODE_LINE.search(text), (d["id"], CODE_LINE.search(text))
        assert "\t" not in text and "  " not in text and "\n\n\n" not in text  # whitespace normalised
        assert sum(text.count(c) for c in "{}[]=;<>|\\") < 0.025 * len(text), d["id"]
        assert sum(text.count(c) for c in "_()") < 0.08 * len(text), d["id"]  # names like __eq__() occur
        letters = sum(c.isalpha() for c in text)
        assert letters > 0.7 * len(text.replace(" ", "").replace("\n", "")), d["id"]
    paragraphs = [p for d in web for p in d["text"].split("\n\n")]
    assert len(set(paragraphs)) == len(paragraphs)  # deduplicated


def test_heldout_text_is_not_in_training_shards(root: Path):
    train = {source: _raw(root, source) for source in ("web", "code")}
    ids = {d["id"] for docs in train.values() for d in docs}
    web_paragraphs = {p for d in train["web"] for p in d["text"].split("\n\n")}
    code_lines = {ln.strip() for d in train["code"] for ln in d["text"].split("\n")}
    heldout = _jsonl(root / "eval/heldout-text.jsonl")
    for d in heldout:
        assert d["id"] not in ids
        if d["source"] == "web":
            assert not web_paragraphs & set(d["text"].split("\n\n")), d["id"]
        else:  # boilerplate (license headers, `return None`) is shared; the file as a whole is not
            lines = [ln.strip() for ln in d["text"].split("\n") if len(ln.strip()) > 40]
            assert sum(ln in code_lines for ln in lines) < 0.2 * len(lines), d["id"]


def test_math_facts_are_correct(root: Path):
    docs = _raw(root, "math")
    equations = lines = 0
    for d in docs:
        equations += len(check_equations(d["text"]))
        if "\n#### " in d["text"]:
            continue
        for line in d["text"].split("\n"):  # an arithmetic worksheet: every line is checked
            a, op, b, c = solve_arithmetic(line)
            result = STATEMENT_RESULT.search(line) or re.search(r"= (\d+)", line)
            assert result and int(result.group(1)) == c, line
            assert math_split(family_key(a, op, b, c)) == "train", line
            lines += 1
    assert lines > 20_000 and equations > 300  # mostly drill lines; equations in word problems and facts
    for split in ("dev", "heldout"):
        for item in _jsonl(root / f"eval/math-{split}.jsonl"):
            assert set(item) == {"id", "question", "answer", "kind"}
            assert re.fullmatch(r"\d+", item["answer"])
            if item["kind"] in ("arithmetic", "drill"):
                a, op, b, c = solve_arithmetic(item["question"])
                assert str(c) == item["answer"], item
                assert math_split(family_key(a, op, b, c)) == split, item
            else:
                assert item["kind"] == "word_problem"
                assert str(solve_word_problem(item["question"])) == item["answer"], item


def test_word_problems_are_solved_correctly(root: Path):
    problems = list(word_problems(_raw(root, "math")))
    assert len(problems) > 100  # most math documents are drills
    templates = set()
    for question, solution, final in problems:
        steps = [s for line in solution for s in check_equations(line)]
        assert len(steps) == len(solution) >= 2, solution  # one equation per line, 2-3 steps
        assert steps[-1][3] == final
        assert solve_word_problem(question) == final, question
        templates.add(next(i for i, (p, _) in enumerate(WORD_PROBLEMS) if p.search(question)))
    assert templates == set(range(len(WORD_PROBLEMS)))


def test_eval_splits_are_disjoint(root: Path):
    train_text = "\n".join(d["text"] for d in _raw(root, "math"))
    dev = [i["question"] for i in _jsonl(root / "eval/math-dev.jsonl")]
    heldout = [i["question"] for i in _jsonl(root / "eval/math-heldout.jsonl")]
    assert len(set(dev)) == len(dev) and len(set(heldout)) == len(heldout)
    assert not set(dev) & set(heldout)
    for q in dev + heldout:
        assert q not in train_text, q
    # both splits mix drills, arithmetic and word problems
    for split in ("dev", "heldout"):
        kinds = {i["kind"] for i in _jsonl(root / f"eval/math-{split}.jsonl")}
        assert kinds == {"drill", "arithmetic", "word_problem"}
    # post-training data is drawn from the train split only
    evals = set(dev) | set(heldout)
    chat = _jsonl(root / "post-training/demo-chat/train.jsonl")
    prefs = _jsonl(root / "post-training/demo-preferences/train.jsonl")
    prompts = _jsonl(root / "post-training/demo-math-prompts/train.jsonl")
    users = [m["content"] for r in chat for m in r["messages"] if m["role"] == "user"]
    users += [m["content"] for r in prefs for m in r["prompt"]]
    users += [m["content"] for r in prompts for m in r["messages"]]
    assert not evals & set(users)


def test_post_training_data(root: Path):
    for r in _jsonl(root / "post-training/demo-chat/train.jsonl"):
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert len("".join(m["content"] for m in r["messages"]).encode()) <= 200
        check_equations(r["messages"][1]["content"])
    for r in _jsonl(root / "post-training/demo-preferences/train.jsonl"):
        assert set(r) == {"prompt", "chosen", "rejected"}
        assert [m["role"] for m in r["prompt"]] == ["user"]
        assert [m["role"] for m in r["chosen"] + r["rejected"]] == ["assistant", "assistant"]
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]
        check_equations(r["chosen"][0]["content"])
        wrong = r["rejected"][0]["content"]
        if EQUATION.search(wrong):
            with pytest.raises(AssertionError):
                check_equations(wrong)
    prompts = _jsonl(root / "post-training/demo-math-prompts/train.jsonl")
    assert len({r["messages"][0]["content"] for r in prompts}) == len(prompts)
    for r in prompts:
        assert set(r) == {"messages", "answer"}
        (message,) = r["messages"]
        assert message["role"] == "user"
        assert str(solve_arithmetic(message["content"])[3]) == r["answer"]


def test_cli_builds_identical_bytes_in_another_directory(root: Path, tmp_path: Path):
    """Determinism across processes and directories, and the CLI path: exit 0, the table printed."""
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "olmo2spec.cli", "demo-data", "out"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "raw/web" in result.stdout and "byte tokens" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing beside the output directory
    a, b = _files(root), _files(tmp_path / "out")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name


def test_batched_repeat_filter_matches_the_recipe_filter():
    import numpy as np

    from olmo2spec.data.demo import _repeat_flags
    from olmo2spec.data.ngrams import has_repeated_ngram

    texts = [b"x" * 31 + b"y" * 20, b"ab" * 32, b"ab" * 31 + b"a", b"0123456789abc" * 32, b"0123456789abcd" * 40,
             ("é" * 16).encode(), ("é" * 33).encode(), b"-" * 32 + b"\n", b"prose " * 10, b"a" * 14]
    texts += [p.read_bytes() for p in sorted((ROOT / "olmo2spec").rglob("*.py"))[:40]]
    expected = [has_repeated_ngram(np.frombuffer(t, dtype=np.uint8)) for t in texts]
    assert _repeat_flags(texts) == expected
    assert _repeat_flags(texts[:4]) == expected[:4]
    assert _repeat_flags([b"abc", *texts[:3]]) == [False, *expected[:3]]  # short texts: one by one
    assert any(expected) and not all(expected)


def test_held_out_post_training_data_is_shaped_as_train_and_asks_nothing_train_asks(root: Path):
    users = {}
    for name in ("demo-chat", "demo-preferences", "demo-math-prompts"):
        train = _jsonl(root / f"post-training/{name}/train.jsonl")
        heldout = _jsonl(root / f"post-training/{name}/heldout.jsonl")
        assert len(heldout) == 128
        assert {tuple(sorted(r)) for r in heldout} == {tuple(sorted(r)) for r in train}
        users[name] = ([m["content"] for r in train for m in r.get("messages", r.get("prompt", []))
                        if m["role"] == "user"],
                       [m["content"] for r in heldout for m in r.get("messages", r.get("prompt", []))
                        if m["role"] == "user"])
    trained = {u for train, _ in users.values() for u in train}
    held = [u for _, heldout in users.values() for u in heldout]
    assert len(set(held)) == len(held) and not trained & set(held)
    for r in _jsonl(root / "post-training/demo-chat/heldout.jsonl"):
        check_equations(r["messages"][1]["content"])
    for r in _jsonl(root / "post-training/demo-math-prompts/heldout.jsonl"):
        (message,) = r["messages"]
        assert str(solve_arithmetic(message["content"])[3]) == r["answer"]
