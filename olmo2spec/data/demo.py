"""The offline demo corpus: small sources shaped like OLMo 2's, built from what ships with Python.

`build_demo_corpus(root, seed)` writes, with no network and no randomness outside seeded
`random.Random`s:

    root/raw/web/web-NNN.jsonl.gz     English prose: standard-library docstrings and comments, the
                                      language reference (`pydoc_data/topics.py`) and the plain-text
                                      files shipped beside the library (LICENSE.txt, idlelib notes)
    root/raw/code/code-NNN.jsonl.gz   whole standard-library modules
    root/raw/math/math-NNN.jsonl.gz   synthetic arithmetic facts and GSM8K-style word problems (train)
    root/eval/math-dev.jsonl          200 math items {"id", "question", "answer", "kind"}
    root/eval/math-heldout.jsonl      500 math items, same shape
    root/eval/heldout-text.jsonl      web and code documents kept out of the raw shards
    root/post-training/demo-chat/train.jsonl, demo-preferences/train.jsonl,
    root/post-training/demo-math-prompts/train.jsonl, and a heldout.jsonl beside each (same shape)
    root/MANIFEST.json                every file: bytes, documents, sha256 (and of its content)

Raw documents are Dolma-shaped JSON lines {"id", "source", "text"}; gzip members carry mtime 0, so
a rebuild writes the same bytes.

The directory (`owned_dir`). The corpus is written only into a new or empty directory, or one that
holds a corpus of ours (its MANIFEST.json says so); any other is refused, nothing in it touched. It
is built in a staging directory beside the target and moved in when complete, so a full disk or a
kill leaves the old corpus or none. A rerun whose manifest fingerprint (seed, Python release, this
module's and its helpers' source) matches and whose files are intact writes nothing; a rebuild
replaces only the files the old and new manifests list (prepare's token files beside them stay) and
leaves files with unchanged bytes as they are, so prepare's resume still recognises them.

Determinism. The math and post-training files depend only on `seed`. The web and code files depend
only on the standard library they are read from (sorted walk, `ast`, nothing imported), so they are
identical wherever the same Python release is installed; a different patch release changes the
library's text and so these files. The `.gz` bytes also depend on zlib's deflate (zlib-ng deflates
differently): MANIFEST.json therefore records each file's uncompressed `content_sha256` as well.

Splits. A math problem's split is a fixed function of its canonical form, never of the seed:
sha256 of the canonical key, mod 100 (< 8 held-out, < 12 dev, else train). Arithmetic keys are
fact families, so `a + b = c` and `c - b = a` (and `a * b = c`, `c / b = a`) share a split, and
commutative pairs share one. A word problem's key is its template and its numbers (names and
items are decoration). Held-out and dev use the same phrasings and templates as train: they measure
arithmetic on unseen problems, not robustness to unseen wording. As a second guard, no dev or
held-out question occurs as a substring of the math train text, and the chat, preference and RLVR
prompts are drawn from the train split only; their held-out files (what the demo measures
post-training on) from the held-out split, asking nothing a train file asks.

Held-out text: code files are ranked by sha256 of their path; the first ~1.25 MB that pass the
recipe's repeated n-gram filter (at byte level) are the code source and the next few are held out.
Held-out code files contribute nothing to the web source; held-out web documents are taken only
from files that are not in the code source, so no held-out text occurs in any training shard.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import sys
import sysconfig
import time
import tokenize
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from olmo2spec.atomic import write_atomic
from olmo2spec.data import ngrams, owned_dir
from olmo2spec.data.ngrams import has_repeated_ngram
from olmo2spec.textgrid import render_grid

__all__ = [
    "DemoReport",
    "MathProblem",
    "SourceReport",
    "build_demo_corpus",
    "math_split",
]

# sizes (UTF-8 bytes of the text field) and shard counts
WEB_MAX_BYTES = 2_900_000
CODE_TRAIN_BYTES = 1_250_000
CODE_HELDOUT_BYTES = 48_000
CODE_MAX_FILE_BYTES = 60_000
MATH_TRAIN_BYTES = 1_200_000
MATH_TRAIN_DRILL_SHARE = 0.95  # of math train documents; the rest: varied-phrasing facts and word problems
MATH_EVAL_SHARES = {"drill": 0.5, "arithmetic": 0.3, "word_problem": 0.2}
SHARDS = {"web": 4, "code": 2, "math": 2}
MATH_DEV_ITEMS = 200
MATH_HELDOUT_ITEMS = 500
CHAT_EXAMPLES = 2000
PREFERENCE_EXAMPLES = 512
MATH_PROMPTS = 256
HELDOUT_CHAT = 128  # per post-training set: held-out records (post-training/<name>/heldout.jsonl)
HELDOUT_PREFERENCES = 128
HELDOUT_MATH_PROMPTS = 128
CHAT_MAX_BYTES = 200  # user + assistant content; the tiny recipe's SFT/DPO sequences are 256 bytes
PROMPT_MAX_BYTES = 48  # RLVR prompts: 128-token sequences, 64 of them for the response
WEB_HELDOUT_BUCKETS = 3  # of 100: share of eligible web documents held out
MIN_WEB_DOC_BYTES = 200

_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
_GENERATED = re.compile(r"(?i)auto-?generated|automatically generated|generated (?:by|from|with)|do not edit|"
                        r"don't edit|character mapping codec")


# --------------------------------------------------------------------------------------------
# report


@attrs.frozen
class SourceReport:
    """One row of the report: a source or split, its files, documents and sizes."""

    name: str
    files: int
    documents: int
    text_bytes: int | None  # UTF-8 bytes of the "text" fields; None where records have no text field
    file_bytes: int  # bytes on disk (compressed for .gz)

    @property
    def byte_tokens(self) -> int | None:
        """Tokens under the byte-level tokenizer: one per byte plus one eos per document."""
        return None if self.text_bytes is None else self.text_bytes + self.documents


@attrs.frozen
class DemoReport:
    root: Path
    seed: int
    sources: tuple[SourceReport, ...]
    seconds: float = attrs.field(eq=False)
    unchanged: bool = attrs.field(default=False, eq=False)
    """The directory already held this corpus: nothing was written."""

    def source(self, name: str) -> SourceReport:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def __str__(self) -> str:
        header = ("source", "files", "docs", "text bytes", "byte tokens", "file bytes")
        rows = [header]
        for s in self.sources:
            text = "-" if s.text_bytes is None else f"{s.text_bytes:,}"
            tokens = "-" if s.byte_tokens is None else f"{s.byte_tokens:,}"
            rows.append((s.name, str(s.files), f"{s.documents:,}", text, tokens, f"{s.file_bytes:,}"))
        done = (f"up to date, nothing written (checked in {self.seconds:.1f} s)" if self.unchanged
                else f"built in {self.seconds:.1f} s")
        return f"demo corpus in {self.root} (seed {self.seed}), {done}\n{render_grid(header, rows[1:])}"


# --------------------------------------------------------------------------------------------
# writing


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# characters that str.splitlines() breaks on and json.dumps(ensure_ascii=False) leaves unescaped
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    """One JSON object per line; no raw line separator of any kind inside a line."""
    lines = (json.dumps(r, ensure_ascii=False, sort_keys=True).translate(_LINE_BREAKS) + "\n" for r in records)
    return "".join(lines).encode("utf-8")


def _gzip(content: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" keeps the temporary name out of the header; mtime=0 keeps the clock out
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=6, mtime=0) as f:
        f.write(content)
    return buf.getvalue()


@attrs.define
class _Writer:
    root: Path
    manifest: list[dict[str, Any]] = attrs.field(factory=list)

    def write(self, rel: str, records: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Write records as JSONL (gzipped when `rel` ends in .gz), atomically; (file bytes, documents)."""
        content = _jsonl(records)
        data = _gzip(content) if rel.endswith(".gz") else content
        path = self.root / rel
        write_atomic(path, data, parents=True)
        self.manifest.append({"path": rel, "bytes": len(data), "documents": len(records),
                              "sha256": _sha256(data), "content_bytes": len(content),
                              "content_sha256": _sha256(content)})
        return len(data), len(records)


def _shard(docs: Sequence[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """Contiguous shards of about equal text bytes, in order; empty shards are dropped."""
    total = sum(len(d["text"].encode("utf-8")) for d in docs)
    shards: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    done = 0
    for d in docs:
        shards[min(n - 1, done * n // max(total, 1))].append(d)
        done += len(d["text"].encode("utf-8"))
    return [s for s in shards if s]


# --------------------------------------------------------------------------------------------
# the standard library as text


@attrs.frozen
class _PyFile:
    rel: str  # posix path relative to the stdlib directory
    data: bytes
    text: str  # decoded by its coding cookie (UTF-8 without one)


def _read_py(rel: str, path: Path) -> _PyFile | None:
    data = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return _PyFile(rel, data, data.decode(encoding))
    except (SyntaxError, UnicodeDecodeError):
        return None


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(relative posix path, path) of regular files under root, sorted, skipping tests and site-packages."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(suffixes):
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    found.append(((rel_dir / name).as_posix(), path))
    found.sort()
    return found


def _is_code_candidate(f: _PyFile) -> bool:
    name = f.rel.rsplit("/", 1)[-1]
    if name.startswith("_sysconfigdata") or f.rel == "pydoc_data/topics.py":
        return False
    if not 500 <= len(f.data) <= CODE_MAX_FILE_BYTES:
        return False
    has_definitions = re.search(r"^[ \t]*(?:async def|def|class) \w", f.text, re.M) is not None
    return has_definitions and not _GENERATED.search(f.text[:2000])


def _repeat_flags(texts: Sequence[bytes], max_period: int = 13, min_repeats: int = 32) -> list[bool]:
    """For each text, whether the recipe's repeated n-gram filter drops it at byte level.

    The same rule as `ngrams.has_repeated_ngram` on byte tokens (a run of `min_repeats` repeats of
    any n-gram, n <= max_period), vectorised over all texts at once: they are joined by one 0xFF
    byte, which UTF-8 never holds, so no run crosses from one text into the next.
    """
    if any(len(t) <= max_period for t in texts):
        return [has_repeated_ngram(np.frombuffer(t, dtype=np.uint8), max_period, min_repeats) for t in texts]
    joined = np.frombuffer(b"\xff".join(texts), dtype=np.uint8)
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    hit = np.zeros(len(texts), dtype=bool)
    for period in range(1, max_period + 1):
        need = (min_repeats - 1) * period  # equal pairs at lag `period` in a row
        equal = np.concatenate(([0], (joined[period:] == joined[:-period]).view(np.int8), [0]))
        edges = np.diff(equal)
        run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        long_runs = run_starts[run_ends - run_starts >= need]
        hit[np.searchsorted(starts, long_runs, side="right") - 1] = True
    return [bool(h) for h in hit]


def _path_rank(rel: str) -> str:
    return _sha256(f"demo-code:{rel}".encode())


def _select_code(files: Sequence[_PyFile]) -> tuple[list[_PyFile], list[_PyFile]]:
    """(train, held-out) code files: ranked by path hash, passing the repeated n-gram filter."""
    train: list[_PyFile] = []
    heldout: list[_PyFile] = []
    train_bytes = heldout_bytes = 0
    candidates = sorted((f for f in files if _is_code_candidate(f)), key=lambda f: _path_rank(f.rel))
    dropped: list[bool] = []
    for i, f in enumerate(candidates):
        if train_bytes >= CODE_TRAIN_BYTES and heldout_bytes >= CODE_HELDOUT_BYTES:
            break
        if i == len(dropped):  # the filter, on the next 64 candidates at once
            dropped += _repeat_flags([g.text.encode("utf-8") for g in candidates[i:i + 64]])
        if dropped[i]:
            continue
        size = len(f.text.encode("utf-8"))
        if train_bytes < CODE_TRAIN_BYTES:
            train.append(f)
            train_bytes += size
        elif heldout_bytes < CODE_HELDOUT_BYTES:
            heldout.append(f)
            heldout_bytes += size
    train.sort(key=lambda f: f.rel)
    heldout.sort(key=lambda f: f.rel)
    return train, heldout


_UNDERLINE = re.compile(r"^\s*([=\-*~^#+`'\"._])\1{2,}\s*$")
_BULLET = re.compile(r"^(\s*)(?:[*+\-•]|\d{1,2}[.)]|\([a-z0-9]\))\s+")
# whitespace-delimited tokens: plain words (with quotes and punctuation around them) and pure symbols
_WORD = re.compile(r"(?<!\S)[\"'(“‘*`\[]*[A-Za-z]+(?:['’\-][A-Za-z]+)*[\"'”’)`*,.;:!?\]]*(?!\S)")
_SYMBOL = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")
_SENTENCE_END = re.compile(r"[a-z)\"”'’][.!?:](?:\s|$)")
# lines of code, doctests, grammars, shell sessions
_CODE_LINE = re.compile(
    r"^\s*(?:>>>|\.\.\.|\$ |% |#|@\w|def |class \w+.*:$|import \w|from [\w.]+ import |return\b"
    r"|(?:for|if|elif|while|with|try|except)\b.*:$|else:$|[\w.\[\]'\"]+ *[-+*/|&]?= *\S)"
    r"|::=|:= |[{};] *$",
    re.M,
)


def _prose(paragraph: str) -> str | None:
    """The paragraph with whitespace normalised, or None if it does not read as English prose."""
    lines = [_BULLET.sub(r"\1", ln) for ln in paragraph.split("\n") if ln.strip() and not _UNDERLINE.match(ln)]
    if not lines or _CODE_LINE.search("\n".join(lines)):
        return None
    text = " ".join(" ".join(lines).replace("**", "").split())
    n = text.count(" ") + 1
    if n < 6 or not _SENTENCE_END.search(text):
        return None
    if len(_WORD.findall(text)) < 0.75 * n or len(_SYMBOL.findall(text)) > 0.05 * n:
        return None
    return text


def _prose_paragraphs(doc: str, seen: set[str]) -> list[str]:
    out: list[str] = []
    for para in re.split(r"\n[ \t]*\n", doc.expandtabs(8).replace("\r\n", "\n")):
        text = _prose(para.strip("\n"))
        if text is None:
            continue
        key = text.lower()
        if key in seen:
            continue
        seen.add(key)
        out.append(text)
    return out


_COMMENT = re.compile(r"^[ \t]*#+ ?(.*)$")


def _docstrings_and_comments(f: _PyFile) -> list[str]:
    """Docstrings in source order, then the file's comment blocks (one string each)."""
    try:
        tree = ast.parse(f.data, filename=f.rel)
    except (SyntaxError, ValueError):
        return []
    out: list[str] = []
    stack: list[ast.AST] = [tree]
    while stack:  # statements only (ast.walk also visits every expression: 3x slower)
        node = stack.pop()
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                out.append(doc)
        children: list[ast.AST] = []
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            value = getattr(node, field, None)
            if isinstance(value, list):
                children.extend(c for c in value if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case))
        stack.extend(sorted(children, key=lambda c: getattr(c, "lineno", 0), reverse=True))
    block: list[str] = []
    for line in [*f.text.splitlines(), ""]:
        m = _COMMENT.match(line)
        if m and not line.lstrip().startswith("#!"):
            block.append(m.group(1))
        elif block:
            out.append("\n".join(block))
            block = []
    return out


def _topics(f: _PyFile) -> list[tuple[str, str]]:
    """The (name, text) entries of the `topics` dict literal in pydoc_data/topics.py, via ast."""
    tree = ast.parse(f.data, filename=f.rel)
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            pairs = []
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                    pairs.append((str(k.value), v.value))
            return sorted(pairs)
    return []


def _text_docs(root: Path, py: Sequence[_PyFile], exclude: set[str],
               seen: set[str]) -> list[dict[str, Any]]:
    """Web documents, in order: shipped text files, language-reference topics, module docstrings."""
    docs: list[dict[str, Any]] = []

    def add(doc_id: str, origin: str, paragraphs: list[str]) -> None:
        text = "\n\n".join(paragraphs)
        if len(text.encode("utf-8")) >= MIN_WEB_DOC_BYTES:
            docs.append({"id": doc_id, "source": "demo-web", "text": text, "origin": origin})

    for rel, path in _stdlib_files(root, (".txt", ".rst")):
        add(f"web/txt/{rel}", rel, _prose_paragraphs(path.read_text(encoding="utf-8", errors="replace"), seen))
    for f in py:
        if f.rel == "pydoc_data/topics.py":
            for name, text in _topics(f):
                title = text.split("\n", 1)[0].strip()
                paragraphs = _prose_paragraphs(text, seen)
                if paragraphs and title and paragraphs[0] != title:
                    paragraphs.insert(0, title)
                add(f"web/topics/{name}", f.rel, paragraphs)
    for f in py:
        if f.rel in exclude or f.rel == "pydoc_data/topics.py" or f.rel.rsplit("/", 1)[-1].startswith("_sysconfigdata"):
            continue
        paragraphs = [p for doc in _docstrings_and_comments(f) for p in _prose_paragraphs(doc, seen)]
        add(f"web/py/{f.rel}", f.rel, paragraphs)
    dropped = _repeat_flags([d["text"].encode("utf-8") for d in docs])
    return [d for d, drop in zip(docs, dropped, strict=True) if not drop]


# --------------------------------------------------------------------------------------------
# synthetic math


def math_split(key: str) -> str:
    """The split ("train", "dev" or "heldout") of a canonical problem key; independent of the seed."""
    bucket = int(_sha256(f"demo-math:{key}".encode())[:8], 16) % 100
    return "heldout" if bucket < 8 else "dev" if bucket < 12 else "train"


@attrs.frozen
class MathProblem:
    key: str  # canonical form: decides the split
    kind: str  # "arithmetic" or "word_problem"
    question: str
    answer: int
    solution: str  # worked solution, one step per line, without the final "#### N"
    steps: tuple[tuple[int, str, int, int], ...]  # (a, op, b, result): the arithmetic in `solution`


_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b,
}
_QUESTIONS = {
    "+": ["What is {a} plus {b}?", "What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.",
          "Calculate {a} + {b}."],
    "-": ["What is {a} minus {b}?", "What is {a} - {b}?", "Compute {a} - {b}.", "Subtract {b} from {a}.",
          "Calculate {a} - {b}."],
    "*": ["What is {a} times {b}?", "What is {a} * {b}?", "Compute {a} * {b}.", "Multiply {a} by {b}.",
          "Calculate {a} * {b}."],
    "/": ["What is {a} divided by {b}?", "What is {a} / {b}?", "Compute {a} / {b}.", "Divide {a} by {b}.",
          "Calculate {a} / {b}."],
}
_ANSWERS = ["{a} {op} {b} = {c}.", "The answer is {c}.", "{a} {op} {b} = {c}, so the answer is {c}."]
_STATEMENTS = {
    "+": ["{a} + {b} = {c}", "The sum of {a} and {b} is {c}.", "{a} plus {b} equals {c}."],
    "-": ["{a} - {b} = {c}", "{a} minus {b} equals {c}.", "If you subtract {b} from {a}, you get {c}."],
    "*": ["{a} * {b} = {c}", "The product of {a} and {b} is {c}.", "{a} times {b} equals {c}."],
    "/": ["{a} / {b} = {c}", "{a} divided by {b} equals {c}.", "{a} divided by {b} is {c}."],
}


def _fact_key(a: int, op: str, b: int, c: int) -> str:
    """The split key of the fact a op b = c: a sum and its differences, a product and its quotients,
    in either order, are one fact family (so 7 + 5, 5 + 7 and 12 - 5 share a split)."""
    x, y = (a, b) if op in "+*" else (b, c)
    return f"{'add' if op in '+-' else 'mul'}:{min(x, y)}:{max(x, y)}"


def _operand(rng: random.Random, max_digits: int) -> int:
    digits = rng.randint(1, max_digits)
    return rng.randint(2 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _arithmetic(rng: random.Random, max_digits: int = 3) -> MathProblem:
    op = rng.choice("+-*/")
    if op in "+-":
        x, y = _operand(rng, max_digits), _operand(rng, max_digits)
        a, b, c = (x, y, x + y) if op == "+" else (x + y, y, x)
    else:
        x, y = _operand(rng, max_digits), _operand(rng, min(2, max_digits))
        a, b, c = (x, y, x * y) if op == "*" else (x * y, y, x)
    question = rng.choice(_QUESTIONS[op]).format(a=a, b=b)
    return MathProblem(key=_fact_key(a, op, b, c), kind="arithmetic", question=question, answer=c,
                       solution=f"{a} {op} {b} = {c}.", steps=((a, op, b, c),))


def _fact_line(rng: random.Random, p: MathProblem) -> str:
    a, op, b, c = p.steps[0]
    if rng.random() < 0.5:
        return rng.choice(_STATEMENTS[op]).format(a=a, b=b, c=c)
    return p.question + " " + rng.choice(_ANSWERS).format(a=a, op=op, b=b, c=c)


# Drills: one fixed phrasing per operation on a 4-digit number, answered "The answer is N.". A
# tiny model learns these by copying and changing the last digit, so they generalize to numbers
# it never saw; arithmetic in varied phrasings and word problems stay out of its reach at this
# scale. Mixed with much of those, even the drills are not learned in a short anneal: hence their
# large share of the train documents. 9,000 numbers make some 27,000 facts, so the train split
# repeats few of them and memorizing does not pay: copying does. A drill's split is its fact's
# (x + 1 = y is held out as a drill exactly when it is held out in every other phrasing).
_DRILLS: dict[str, tuple[str, str, int]] = {  # name: (question, op, b)
    "copy": ("What is {x} plus 0?", "+", 0),
    "times-one": ("What is {x} times 1?", "*", 1),
    "increment": ("What is {x} plus 1?", "+", 1),
    "decrement": ("What is {x} minus 1?", "-", 1),
}


def _drill(rng: random.Random) -> MathProblem:
    name = rng.choice(list(_DRILLS))
    question, op, b = _DRILLS[name]
    x = rng.randint(1000, 9999)
    c = _OPS[op](x, b)
    return MathProblem(key=_fact_key(x, op, b, c), kind="drill", question=question.format(x=x), answer=c,
                       solution=f"The answer is {c}.", steps=((x, op, b, c),))


_NAMES = [("Mia", "she", "her"), ("Liam", "he", "his"), ("Ava", "she", "her"), ("Noah", "he", "his"),
          ("Zoe", "she", "her"), ("Omar", "he", "his"), ("Lena", "she", "her"), ("Ravi", "he", "his"),
          ("Sofia", "she", "her"), ("Ethan", "he", "his"), ("Nora", "she", "her"), ("Kenji", "he", "his"),
          ("Aisha", "she", "her"), ("Lucas", "he", "his"), ("Emma", "she", "her"), ("Diego", "he", "his"),
          ("Hana", "she", "her"), ("Tom", "he", "his"), ("Grace", "she", "her"), ("Sam", "he", "his")]
_GOODS = [("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("book", "books"),
          ("ticket", "tickets"), ("shirt", "shirts"), ("cup", "cups"), ("toy car", "toy cars"),
          ("box of tea", "boxes of tea"), ("plant", "plants"), ("candle", "candles"), ("ball", "balls")]
_THINGS = ["stickers", "marbles", "cookies", "pencils", "cards", "stamps", "beads", "shells", "crayons", "buttons"]
_VEHICLES = ["train", "bus", "car", "truck", "ferry", "cyclist"]
_PLANTS = ["tomato plants", "rose bushes", "carrots", "sunflowers", "lettuces", "pepper plants"]


class _Story:
    """Builds a word problem: sentences, solution lines and the steps they compute."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, str, int, int]] = []
        self.lines: list[str] = []

    def step(self, a: int, op: str, b: int, line: str) -> int:
        c = _OPS[op](a, b)
        assert op != "/" or a % b == 0, (a, b)
        assert c >= 0, (a, op, b)
        self.steps.append((a, op, b, c))
        self.lines.append(line.format(eq=f"{a} {op} {b} = {c}"))
        return c

    def problem(self, key: str, question: str) -> MathProblem:
        return MathProblem(key=key, kind="word_problem", question=question, answer=self.steps[-1][3],
                           solution="\n".join(self.lines), steps=tuple(self.steps))


def _wp_shopping(rng: random.Random) -> MathProblem:
    (name, he, _his), (g1, g2) = rng.choice(_NAMES), rng.sample(_GOODS, 2)
    n1, p1, n2, p2 = rng.randint(2, 12), rng.randint(1, 25), rng.randint(2, 12), rng.randint(1, 25)
    q = (f"{name} buys {n1} {g1[1]} at {p1} dollars each and {n2} {g2[1]} at {p2} dollars each. "
         f"How many dollars does {name} spend in total?")
    s = _Story()
    x = s.step(n1, "*", p1, f"The {g1[1]} cost {{eq}} dollars.")
    y = s.step(n2, "*", p2, f"The {g2[1]} cost {{eq}} dollars.")
    s.step(x, "+", y, f"In total {he} spends {{eq}} dollars.")
    return s.problem(f"shopping:{n1}:{p1}:{n2}:{p2}", q)


def _wp_change(rng: random.Random) -> MathProblem:
    (name, he, _his), (g, _) = rng.choice(_NAMES), rng.sample(_GOODS, 2)
    n, p = rng.randint(2, 9), rng.randint(2, 20)
    bill = next(v for v in (20, 50, 100, 200) if v >= n * p)
    q = (f"{name} buys {n} {g[1]} that cost {p} dollars each and pays with a {bill} dollar bill. "
         f"How much change does {he} get, in dollars?")
    s = _Story()
    total = s.step(n, "*", p, f"The {g[1]} cost {{eq}} dollars.")
    s.step(bill, "-", total, "The change is {eq} dollars.")
    return s.problem(f"change:{n}:{p}:{bill}", q)


def _wp_travel(rng: random.Random) -> MathProblem:
    v = rng.choice(_VEHICLES)
    s1, t1, s2, t2 = rng.randint(2, 9) * 10, rng.randint(1, 6), rng.randint(2, 9) * 10, rng.randint(1, 6)
    q = (f"A {v} travels at {s1} miles per hour for {t1} hours, then at {s2} miles per hour "
         f"for {t2} hours. How many miles does the {v} travel in total?")
    s = _Story()
    d1 = s.step(s1, "*", t1, "In the first part it travels {eq} miles.")
    d2 = s.step(s2, "*", t2, "In the second part it travels {eq} miles.")
    s.step(d1, "+", d2, "Altogether it travels {eq} miles.")
    return s.problem(f"travel:{s1}:{t1}:{s2}:{t2}", q)


def _wp_sharing(rng: random.Random) -> MathProblem:
    (name, he, _his), thing = rng.choice(_NAMES), rng.choice(_THINGS)
    while True:
        boxes, per = rng.randint(2, 12), rng.randint(2, 24)
        friends = [f for f in range(2, 13) if boxes * per % f == 0 and f != boxes]
        if friends:
            break
    f = rng.choice(friends)
    q = (f"{name} has {boxes} boxes with {per} {thing} in each box. {he.capitalize()} shares all the "
         f"{thing} equally among {f} friends. How many {thing} does each friend get?")
    s = _Story()
    total = s.step(boxes, "*", per, f"{name} has {{eq}} {thing}.")
    s.step(total, "/", f, "Each friend gets {eq} " + thing + ".")
    return s.problem(f"sharing:{boxes}:{per}:{f}", q)


def _wp_ages(rng: random.Random) -> MathProblem:
    (a, _, _), (b, _, _), (c, _, _) = rng.sample(_NAMES, 3)
    x, k = rng.randint(3, 20), rng.randint(2, 4)
    d = rng.randint(1, x * k - 1)
    q = (f"{a} is {x} years old. {b} is {k} times as old as {a}. {c} is {d} years younger than {b}. "
         f"How old is {c}?")
    s = _Story()
    y = s.step(x, "*", k, f"{b} is {{eq}} years old.")
    s.step(y, "-", d, f"{c} is {{eq}} years old.")
    return s.problem(f"ages:{x}:{k}:{d}", q)


def _wp_wages(rng: random.Random) -> MathProblem:
    name, he, _his = rng.choice(_NAMES)
    w, h, days = rng.randint(8, 30), rng.randint(2, 10), rng.randint(2, 7)
    q = (f"{name} earns {w} dollars per hour and works {h} hours a day. How many dollars does "
         f"{he} earn in {days} days?")
    s = _Story()
    per_day = s.step(w, "*", h, f"Each day {he} earns {{eq}} dollars.")
    s.step(per_day, "*", days, f"In {days} days {he} earns {{eq}} dollars.")
    return s.problem(f"wages:{w}:{h}:{days}", q)


def _wp_reading(rng: random.Random) -> MathProblem:
    name, _he, _his = rng.choice(_NAMES)
    r, days, rest = rng.randint(5, 40), rng.randint(2, 10), rng.randint(10, 200)
    pages = r * days + rest
    q = (f"A book has {pages} pages. {name} reads {r} pages a day for {days} days. "
         f"How many pages are left to read?")
    s = _Story()
    read = s.step(r, "*", days, f"{name} reads {{eq}} pages.")
    s.step(pages, "-", read, "There are {eq} pages left.")
    return s.problem(f"reading:{pages}:{r}:{days}", q)


def _wp_baking(rng: random.Random) -> MathProblem:
    name, he, _his = rng.choice(_NAMES)
    per, batches = rng.randint(2, 6), rng.randint(2, 9)
    have = rng.randint(0, per * batches - 1)
    q = (f"A cake recipe needs {per} eggs per batch. {name} wants to bake {batches} batches and has "
         f"{have} eggs. How many more eggs does {he} need?")
    s = _Story()
    need = s.step(per, "*", batches, f"{name} needs {{eq}} eggs.")
    s.step(need, "-", have, f"{he.capitalize()} must buy {{eq}} more eggs.")
    return s.problem(f"baking:{per}:{batches}:{have}", q)


def _wp_garden(rng: random.Random) -> MathProblem:
    name, he, _his = rng.choice(_NAMES)
    plant = rng.choice(_PLANTS)
    rows, per = rng.randint(3, 15), rng.randint(4, 20)
    eaten, more = rng.randint(1, rows * per - 1), rng.randint(2, 30)
    q = (f"{name} plants {rows} rows of {plant} with {per} in each row. Rabbits eat {eaten} of them, "
         f"and then {he} plants {more} more. How many {plant} does {name} have now?")
    s = _Story()
    total = s.step(rows, "*", per, f"{name} plants {{eq}} {plant}.")
    left = s.step(total, "-", eaten, "After the rabbits, {eq} are left.")
    s.step(left, "+", more, f"With the new ones {he} has {{eq}} {plant}.")
    return s.problem(f"garden:{rows}:{per}:{eaten}:{more}", q)


def _wp_savings(rng: random.Random) -> MathProblem:
    name, he, _his = rng.choice(_NAMES)
    per, weeks = rng.randint(3, 40), rng.randint(2, 12)
    spend = rng.randint(1, per * weeks)
    q = (f"{name} saves {per} dollars every week for {weeks} weeks. Then {he} spends {spend} dollars "
         f"on a gift. How many dollars does {he} have left?")
    s = _Story()
    saved = s.step(per, "*", weeks, f"{name} saves {{eq}} dollars.")
    s.step(saved, "-", spend, f"{he.capitalize()} has {{eq}} dollars left.")
    return s.problem(f"savings:{per}:{weeks}:{spend}", q)


def _wp_collecting(rng: random.Random) -> MathProblem:
    name, he, _his = rng.choice(_NAMES)
    thing = rng.choice(_THINGS)
    start, per, days = rng.randint(5, 100), rng.randint(2, 15), rng.randint(2, 10)
    q = (f"{name} has {start} {thing}. {he.capitalize()} gets {per} more {thing} every day for {days} days. "
         f"How many {thing} does {he} have then?")
    s = _Story()
    got = s.step(per, "*", days, f"{he.capitalize()} gets {{eq}} {thing}.")
    s.step(start, "+", got, f"{name} then has {{eq}} {thing}.")
    return s.problem(f"collecting:{start}:{per}:{days}", q)


WORD_PROBLEMS: tuple[Callable[[random.Random], MathProblem], ...] = (
    _wp_shopping, _wp_change, _wp_travel, _wp_sharing, _wp_ages, _wp_wages, _wp_reading, _wp_baking,
    _wp_garden, _wp_savings, _wp_collecting,
)


def _word_problem(rng: random.Random) -> MathProblem:
    return rng.choice(WORD_PROBLEMS)(rng)


def _draw(rng: random.Random, make: Callable[[random.Random], MathProblem], split: str) -> MathProblem:
    while True:
        p = make(rng)
        if math_split(p.key) == split:
            return p


def _gsm8k_text(p: MathProblem) -> str:
    return f"{p.question}\n{p.solution}\n#### {p.answer}"


def _math_train(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"demo-math-train:{seed}")
    docs: list[dict[str, Any]] = []
    size = 0
    while size < MATH_TRAIN_BYTES:
        r = rng.random()
        if r < MATH_TRAIN_DRILL_SHARE:
            text = "\n".join(f"{p.question} {p.solution}"
                             for p in (_draw(rng, _drill, "train") for _ in range(rng.randint(3, 8))))
        elif r < (1 + MATH_TRAIN_DRILL_SHARE) / 2:
            text = _gsm8k_text(_draw(rng, _word_problem, "train"))
        else:
            digits = rng.choice((1, 2, 2, 3))
            make = functools.partial(_arithmetic, max_digits=digits)
            facts = [_draw(rng, make, "train") for _ in range(rng.randint(3, 8))]
            text = "\n".join(_fact_line(rng, p) for p in facts)
        docs.append({"id": f"math/train/{len(docs):06d}", "source": "demo-math", "text": text})
        size += len(text.encode("utf-8"))
    return docs


def _math_eval(seed: int, split: str, n: int, train_text: str, taken: set[str]) -> list[dict[str, Any]]:
    rng = random.Random(f"demo-math-{split}:{seed}")
    n_drill = round(n * MATH_EVAL_SHARES["drill"])
    n_arith = n_drill + round(n * MATH_EVAL_SHARES["arithmetic"])
    items: list[dict[str, Any]] = []
    keys: set[str] = set()
    while len(items) < n:
        make = (_drill if len(items) < n_drill else (lambda r: _arithmetic(r, rng.choice((1, 2, 2, 3))))
                if len(items) < n_arith else _word_problem)
        p = _draw(rng, make, split)
        if p.key in keys or p.question in taken or p.question in train_text:
            continue
        keys.add(p.key)
        taken.add(p.question)
        items.append({"question": p.question, "answer": str(p.answer), "kind": p.kind})
    rng.shuffle(items)
    return [{"id": f"math-{split}-{i:04d}", **item} for i, item in enumerate(items)]


# --------------------------------------------------------------------------------------------
# post-training demo data


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


_WORDS = ["apple", "river", "garden", "window", "planet", "silver", "forest", "candle", "yellow", "market",
          "button", "pencil", "orange", "summer", "bridge", "rocket", "castle", "kitten", "little", "ocean"]


def _instruction(rng: random.Random) -> tuple[str, str, str]:
    """(user, good answer, wrong answer) for a simple instruction."""
    kind = rng.randrange(8)
    w = rng.choice(_WORDS)
    if kind == 0:
        k = rng.randint(2, 5)
        return f"Repeat the word '{w}' {k} times.", " ".join([w] * k), " ".join([w] * (k + 1))
    if kind == 1:
        a = rng.randint(1, 50)
        b = a + rng.randint(2, 7)
        good = ", ".join(str(i) for i in range(a, b + 1))
        return f"Write the numbers from {a} to {b}.", good, ", ".join(str(i) for i in range(a, b))
    if kind == 2:
        return f"Spell the word '{w}' backwards.", w[::-1], w[::-1][1:] + w[-1]
    if kind == 3:
        xs = rng.sample(range(1, 100), rng.randint(3, 5))
        good = ", ".join(map(str, sorted(xs)))
        bad = ", ".join(map(str, sorted(xs, reverse=True)))
        return f"Sort these numbers from smallest to largest: {', '.join(map(str, xs))}.", good, bad
    if kind == 4:
        a, b = rng.sample(range(1, 1000), 2)
        hi, lo = max(a, b), min(a, b)
        return f"Which is larger, {a} or {b}?", f"{hi} is larger than {lo}.", f"{lo} is larger than {hi}."
    if kind == 5:
        return (f"How many letters are in the word '{w}'?", f"The word '{w}' has {len(w)} letters.",
                f"The word '{w}' has {len(w) + 1} letters.")
    if kind == 6:
        n = rng.randint(1, 999)
        parity, wrong = ("even", "odd") if n % 2 == 0 else ("odd", "even")
        return f"Is {n} even or odd?", f"{n} is {parity}.", f"{n} is {wrong}."
    return f"Write '{w}' in capital letters.", w.upper(), w.capitalize()


def _math_answer(p: MathProblem, wrong: bool = False) -> str:
    a, op, b, c = p.steps[-1]
    delta = 1 if c < 20 else 10
    bad = c - delta if c % 2 and c >= delta else c + delta
    if p.kind == "drill":  # answered as the math corpus answers drills: what the base model learned
        return f"The answer is {bad if wrong else c}."
    if not wrong:
        return f"{p.solution}\nThe answer is {p.answer}." if p.kind == "word_problem" else \
            f"{p.solution[:-1]}. The answer is {p.answer}."
    lines = p.solution.split("\n")
    lines[-1] = lines[-1].replace(f"{a} {op} {b} = {c}", f"{a} {op} {b} = {bad}")
    body = "\n".join(lines)
    return f"{body}\nThe answer is {bad}." if p.kind == "word_problem" else f"{body[:-1]}. The answer is {bad}."


def _chat_pair(rng: random.Random, split: str = "train") -> tuple[str, str, str]:
    """(user, good, wrong) short enough for the tiny recipe's 256-byte sequences; math from `split`."""
    while True:
        r = rng.random()
        if r < 0.25:
            user, good, bad = _instruction(rng)
        else:
            # drills: the math a model of the tiny recipe's size learns (copying a number), so the one
            # RLVR and DPO can sharpen; word problems and arithmetic mostly teach the answer's format
            make = _drill if r < 0.75 else _word_problem if r < 0.85 else \
                (lambda g: _arithmetic(g, rng.choice((1, 2, 2, 3))))
            p = _draw(rng, make, split)
            user, good, bad = p.question, _math_answer(p), _math_answer(p, wrong=True)
        if len((user + max(good, bad, key=len)).encode("utf-8")) <= CHAT_MAX_BYTES:
            return user, good, bad


def _math_prompt(rng: random.Random, split: str) -> MathProblem:
    """An RLVR prompt: a drill, or (a quarter of them) two-digit arithmetic."""
    return _draw(rng, _drill if rng.random() < 0.75 else (lambda r: _arithmetic(r, 2)), split)


def _post_training(seed: int) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(f"demo-chat:{seed}")
    chat: list[dict[str, Any]] = []
    for _ in range(CHAT_EXAMPLES):
        user, good, _bad = _chat_pair(rng)
        chat.append({"messages": [_user(user), _assistant(good)]})
    rng = random.Random(f"demo-preferences:{seed}")
    prefs: list[dict[str, Any]] = []
    for _ in range(PREFERENCE_EXAMPLES):
        user, good, bad = _chat_pair(rng)
        prefs.append({"prompt": [_user(user)], "chosen": [_assistant(good)], "rejected": [_assistant(bad)]})
    rng = random.Random(f"demo-math-prompts:{seed}")
    prompts: list[dict[str, Any]] = []
    asked: set[str] = set()
    while len(prompts) < MATH_PROMPTS:
        p = _math_prompt(rng, "train")
        if len(p.question.encode("utf-8")) <= PROMPT_MAX_BYTES and p.question not in asked:
            asked.add(p.question)
            prompts.append({"messages": [_user(p.question)], "answer": str(p.answer)})
    return {"demo-chat": chat, "demo-preferences": prefs, "demo-math-prompts": prompts}


def _users(records: Iterable[dict[str, Any]]) -> set[str]:
    return {m["content"] for r in records for m in r.get("messages", r.get("prompt", [])) if m["role"] == "user"}


def _post_training_heldout(seed: int, train: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Held-out records of each post-training set, shaped as its train records (what the demo measures
    SFT, DPO and RLVR on): math from the held-out split, no prompt any train set asks (the instructions
    left are those with many variants: parity, sorting, comparing, counting up)."""
    seen = set().union(*(_users(records) for records in train.values()))

    def fresh(rng: random.Random) -> tuple[str, str, str]:
        while True:
            user, good, bad = _chat_pair(rng, "heldout")
            if user not in seen:
                seen.add(user)
                return user, good, bad

    rng = random.Random(f"demo-chat-heldout:{seed}")
    chat = [{"messages": [_user(user), _assistant(good)]}
            for user, good, _bad in (fresh(rng) for _ in range(HELDOUT_CHAT))]
    rng = random.Random(f"demo-preferences-heldout:{seed}")
    prefs = [{"prompt": [_user(user)], "chosen": [_assistant(good)], "rejected": [_assistant(bad)]}
             for user, good, bad in (fresh(rng) for _ in range(HELDOUT_PREFERENCES))]
    rng = random.Random(f"demo-math-prompts-heldout:{seed}")
    prompts: list[dict[str, Any]] = []
    while len(prompts) < HELDOUT_MATH_PROMPTS:
        p = _math_prompt(rng, "heldout")
        if len(p.question.encode("utf-8")) <= PROMPT_MAX_BYTES and p.question not in seen:
            seen.add(p.question)
            prompts.append({"messages": [_user(p.question)], "answer": str(p.answer)})
    return {"demo-chat": chat, "demo-preferences": prefs, "demo-math-prompts": prompts}


# --------------------------------------------------------------------------------------------
# the build


def _text_bytes(docs: Iterable[dict[str, Any]]) -> int:
    return sum(len(d["text"].encode("utf-8")) for d in docs)


def _raw_record(d: dict[str, Any]) -> dict[str, Any]:
    return {"id": d["id"], "source": d["source"], "text": d["text"]}


def _write_corpus(root: Path, seed: int, fingerprint: str) -> DemoReport:
    """Write the demo corpus into the empty directory `root`; returns what was written."""
    start = time.perf_counter()
    writer = _Writer(root)
    rows: list[SourceReport] = []

    stdlib = _stdlib_root()
    py = [f for rel, path in _stdlib_files(stdlib, (".py",)) if (f := _read_py(rel, path)) is not None]
    code_train, code_heldout = _select_code(py)
    code_train_rels = {f.rel for f in code_train}
    web_all = _text_docs(stdlib, py, exclude={f.rel for f in code_heldout}, seen=set())

    web_train: list[dict[str, Any]] = []
    web_heldout: list[dict[str, Any]] = []
    size = 0
    for d in web_all:
        bucket = int(_sha256(f"demo-web:{d['id']}".encode())[:8], 16) % 100
        if bucket < WEB_HELDOUT_BUCKETS and d["origin"] not in code_train_rels:
            web_heldout.append(d)
        elif size < WEB_MAX_BYTES:
            web_train.append(d)
            size += len(d["text"].encode("utf-8"))

    code_docs = [{"id": f"code/{f.rel}", "source": "demo-code", "text": f.text} for f in code_train]
    math_docs = _math_train(seed)

    for name, docs in (("web", web_train), ("code", code_docs), ("math", math_docs)):
        file_bytes = 0
        shards = _shard(docs, SHARDS[name])
        for i, shard in enumerate(shards):
            rel = f"raw/{name}/{name}-{i:03d}.jsonl.gz"
            file_bytes += writer.write(rel, [_raw_record(d) for d in shard])[0]
        rows.append(SourceReport(f"raw/{name}", len(shards), len(docs), _text_bytes(docs), file_bytes))

    train_text = "\n".join(d["text"] for d in math_docs)
    taken: set[str] = set()
    for split, n in (("dev", MATH_DEV_ITEMS), ("heldout", MATH_HELDOUT_ITEMS)):
        items = _math_eval(seed, split, n, train_text, taken)
        file_bytes, _ = writer.write(f"eval/math-{split}.jsonl", items)
        rows.append(SourceReport(f"eval/math-{split}", 1, len(items), None, file_bytes))

    heldout = [{"id": d["id"], "source": "web", "text": d["text"]} for d in web_heldout]
    heldout += [{"id": f"code/{f.rel}", "source": "code", "text": f.text} for f in code_heldout]
    writer.write("eval/heldout-text.jsonl", heldout)
    for source in ("web", "code"):
        docs = [d for d in heldout if d["source"] == source]
        rows.append(SourceReport(f"eval/heldout-text ({source})", 1, len(docs), _text_bytes(docs), len(_jsonl(docs))))

    post_training = _post_training(seed)
    for name, records in post_training.items():
        file_bytes, _ = writer.write(f"post-training/{name}/train.jsonl", records)
        rows.append(SourceReport(f"post-training/{name}", 1, len(records), None, file_bytes))
    for name, records in _post_training_heldout(seed, post_training).items():
        file_bytes, _ = writer.write(f"post-training/{name}/heldout.jsonl", records)
        rows.append(SourceReport(f"post-training/{name} (held-out)", 1, len(records), None, file_bytes))

    manifest = {
        "writer": DEMO_WRITER,
        "fingerprint": fingerprint,
        "report": [attrs.astuple(r) for r in rows],
        "seed": seed,
        "python": platform.python_version(),
        "stdlib_files": len(py),
        "files": sorted(writer.manifest, key=lambda e: str(e["path"])),
        # per raw source: byte_tokens = tokens under the byte-level tokenizer (bytes + one eos a document)
        "sources": {r.name.removeprefix("raw/"): {"documents": r.documents, "text_bytes": r.text_bytes,
                                                  "byte_tokens": r.byte_tokens}
                    for r in rows if r.name.startswith("raw/")},
    }
    text = json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n"
    write_atomic(root / "MANIFEST.json", text.encode("utf-8"), parents=True)
    return DemoReport(root=root, seed=seed, sources=tuple(rows), seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# the directory

DEMO_WRITER = "olmo2spec demo-data"
_LEGACY_KEYS = frozenset({"seed", "python", "stdlib_files", "files", "sources"})


def _is_demo_manifest(manifest: dict[str, Any]) -> bool:
    """Written by demo-data: marked so, or shaped like the manifests of releases before the mark."""
    return manifest.get("writer") == DEMO_WRITER or ("writer" not in manifest and manifest.keys() >= _LEGACY_KEYS)


def _fingerprint(seed: int) -> str:
    """What the corpus depends on: the seed, the Python release (its library is the web and code text)
    and the code that builds it."""
    code = b"".join(Path(m.__file__ or "").read_bytes() for m in (sys.modules[__name__], ngrams))
    return _sha256(f"{seed}\0{platform.python_version()}\0".encode() + code)


def _reported_rows(manifest: dict[str, Any]) -> tuple[SourceReport, ...] | None:
    try:
        return tuple(SourceReport(*row) for row in manifest["report"])
    except (KeyError, TypeError):
        return None


def build_demo_corpus(root: Path, seed: int = 0) -> DemoReport:
    """Build the demo corpus in `root` (see the module docstring); returns what was written.

    Raises:
        owned_dir.DirectoryError: `root` is a file, or a directory that is not empty and holds no demo corpus.
        OSError: from the file system (a full disk, no permission); `root` then holds what it held before.
    """
    start = time.perf_counter()
    root = Path(root)
    target = root.resolve() if root.is_symlink() else Path(os.path.abspath(root))  # `.` has a name, a parent
    old = owned_dir.claim(target, _is_demo_manifest, "demo corpus")
    fingerprint = _fingerprint(seed)
    if old is not None and owned_dir.up_to_date(target, old, fingerprint):
        rows = _reported_rows(old)
        if rows is not None:
            return DemoReport(root=root, seed=seed, sources=rows, seconds=time.perf_counter() - start,
                              unchanged=True)
    with owned_dir.staging(target) as stage:
        report = _write_corpus(stage, seed, fingerprint)
        owned_dir.commit(stage, target, old)
    return attrs.evolve(report, root=root, seconds=time.perf_counter() - start)


if __name__ == "__main__":  # pragma: no cover
    print(build_demo_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-data")))
