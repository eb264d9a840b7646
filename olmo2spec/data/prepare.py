"""The `prepare` stage: raw JSONL documents to token files, with the curation filters of section 2.4.1.

For each source the stage names, every file its `raw` patterns match (JSONL, plain or `.gz`;
one JSON object per line, the text under the stage's `text_field`; blank lines skipped) is
tokenized with the plan's tokenizer, filtered, and written as one token file
(`tokenfile.write_token_file`: documents each followed by eos, and the `.idx` sidecar) into the
directory of the source's first `paths` pattern, named after the raw file: `web-000.jsonl.gz`
becomes `web-000.npy`.

- Filters run in the stage's order; a dropped document is counted under the first filter that
  drops it. Code filters apply to sources of category "code" only. A document whose text is
  empty is dropped too (it would be a lone eos), counted as "empty".
- Token counts include each document's eos: they are what the token files hold, so
  tokens in = tokens dropped + tokens out.
- Files are prepared in parallel by a process pool; each output depends on its raw file alone,
  so the bytes are the same at any worker count.
- Resumable: a finished file gets a JSON sidecar `<out>.report.json`, written atomically after
  the token file and its index. A file whose sidecar matches the raw file (path, size, mtime),
  the settings (tokenizer, text field, filters and thresholds), and whose token file and index
  are whole and agree with it (`tokenfile.index_problem`: sizes, ends in order, each at an eos)
  is skipped; any other, a damaged one included, is redone from scratch. Partial outputs are never left under
  their final names: every file is written under a temporary name and renamed into place.

Runs on one node: two prepare runs writing the same directory at once are not supported.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import fnmatch
import gzip
import importlib
import json
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np

from olmo2spec.atomic import write_json_atomic
from olmo2spec.data import sources as src
from olmo2spec.data.filters import FILTERS, FilterParams, applies
from olmo2spec.data.tokenfile import TOKEN_DTYPE, index_path, index_problem, write_token_file
from olmo2spec.plan.plan import Plan, PrepareStagePlan
from olmo2spec.textgrid import render_grid

__all__ = [
    "PrepareError", "FileJob", "Counts", "FileResult", "SourceReport", "PrepareReport", "TokenizerLike",
    "plan_jobs", "is_complete", "prepare_file", "prepare", "output_name", "output_dir", "report_path",
    "EMPTY",
]

REPORT_VERSION = 1
EMPTY = "empty"
"""Pseudo-filter under which documents with empty text are counted."""
_BATCH_DOCS = 1024
_BATCH_CHARS = 1 << 22
_RAW_SUFFIXES = (".jsonl", ".json", ".ndjson")
_FIX_LINE = "; fix or remove that line"
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # what a JSON \u escape can make that UTF-8 cannot hold


class PrepareError(Exception):
    """An expected problem with the data: no raw files, a malformed line, clashing outputs."""


class TokenizerLike(Protocol):
    """What prepare needs of a tokenizer (`olmo2spec.data.tokenizer.Tokenizer` is one)."""

    eos_id: int

    def encode_batch(self, texts: list[str], num_threads: int = ...) -> list[list[int]]: ...


TokenizerLoader = Callable[[str], TokenizerLike]


@attrs.frozen(kw_only=True)
class FileJob:
    """One raw file to tokenize into one token file; picklable, sent to a worker process."""

    source: str
    category: str
    raw: Path
    out: Path
    text_field: str
    filters: tuple[str, ...]
    """The stage's filters that apply to this source, in order."""
    params: FilterParams
    tokenizer: str
    eos_id: int
    threads: int = 1
    """Threads the tokenizer's encode_batch may use."""

    def settings(self) -> dict[str, Any]:
        """What the output depends on besides the raw file: a change redoes the file."""
        return {"tokenizer": self.tokenizer, "eos_id": self.eos_id, "text_field": self.text_field,
                "filters": list(self.filters), "params": attrs.asdict(self.params)}


@attrs.define
class Counts:
    """Documents and tokens (eos included) in, dropped per filter, and out."""

    docs_in: int = 0
    tokens_in: int = 0
    dropped_docs: dict[str, int] = attrs.field(factory=dict)
    dropped_tokens: dict[str, int] = attrs.field(factory=dict)
    docs_out: int = 0
    tokens_out: int = 0

    def add(self, other: Counts) -> None:
        self.docs_in += other.docs_in
        self.tokens_in += other.tokens_in
        for name, n in other.dropped_docs.items():
            self.dropped_docs[name] = self.dropped_docs.get(name, 0) + n
        for name, n in other.dropped_tokens.items():
            self.dropped_tokens[name] = self.dropped_tokens.get(name, 0) + n
        self.docs_out += other.docs_out
        self.tokens_out += other.tokens_out

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counts:
        return cls(docs_in=int(data["docs_in"]), tokens_in=int(data["tokens_in"]),
                   dropped_docs={str(k): int(v) for k, v in data["dropped_docs"].items()},
                   dropped_tokens={str(k): int(v) for k, v in data["dropped_tokens"].items()},
                   docs_out=int(data["docs_out"]), tokens_out=int(data["tokens_out"]))


@attrs.frozen
class FileResult:
    job: FileJob
    counts: Counts
    skipped: bool
    """Already complete from an earlier run: not redone."""


@attrs.define
class SourceReport:
    name: str
    out_dir: str
    files: int = 0
    skipped: int = 0
    raw_bytes: int = 0
    counts: Counts = attrs.field(factory=Counts)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "files": self.files, "skipped": self.skipped,
                "raw_bytes": self.raw_bytes, **self.counts.to_dict()}


@attrs.define
class PrepareReport:
    filters: list[str]
    """Column order of the dropped counts: the stage's filters, then "empty"."""
    sources: dict[str, SourceReport] = attrs.field(factory=dict)
    not_prepared: list[str] = attrs.field(factory=list)
    """Sources of the stage without `raw` files: their token files are used as they are."""

    def total(self) -> Counts:
        total = Counts()
        for report in self.sources.values():
            total.add(report.counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"version": REPORT_VERSION, "filters": self.filters,
                "sources": {name: r.to_dict() for name, r in self.sources.items()},
                "total": self.total().to_dict(), "not_prepared": self.not_prepared}

    def table(self) -> str:
        """A plain-text table: one row per source and a total; "-" where a filter does not apply."""
        head = ["source", "files", "redone", "docs in", "tokens in",
                *(f"-{name}" for name in self.filters), "docs out", "tokens out"]
        rows = [head]

        def row(name: str, files: int, redone: int, c: Counts) -> list[str]:
            return [name, f"{files:,}", f"{redone:,}", f"{c.docs_in:,}", f"{c.tokens_in:,}",
                    *(f"{c.dropped_docs[f]:,}" if f in c.dropped_docs else "-" for f in self.filters),
                    f"{c.docs_out:,}", f"{c.tokens_out:,}"]

        for name, r in self.sources.items():
            rows.append(row(name, r.files, r.files - r.skipped, r.counts))
        rows.append(row("total", sum(r.files for r in self.sources.values()),
                        sum(r.files - r.skipped for r in self.sources.values()), self.total()))
        lines = [render_grid(head, rows[1:-1], footer=rows[-1:])]
        if self.not_prepared:
            lines.append(f"not prepared (no raw files declared): {', '.join(self.not_prepared)}")
        return "\n".join(lines)


# --- planning ---------------------------------------------------------------------------------------------------


def output_name(raw: Path) -> str:
    """`web-000.jsonl.gz` -> `web-000.npy`."""
    name = raw.name.removesuffix(".gz")
    for suffix in _RAW_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name.removesuffix(suffix)
            break
    return name + ".npy"


def output_dir(pattern: str) -> Path:
    """The directory of a `paths` pattern as `sources.glob_pattern` expands it: the part before its first
    glob character, up to a '/'; an escaped `[*]`, `[?]` or `[[]` is the character itself."""
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "[" and pattern[i + 1:i + 2] in tuple(src.GLOB_CHARS) and pattern[i + 2:i + 3] == "]":
            literal.append(pattern[i + 1])
            i += 3
            continue
        if pattern[i] in src.GLOB_CHARS:
            break
        literal.append(pattern[i])
        i += 1
    return Path(os.path.dirname("".join(literal)) or ".")


def report_path(out: Path) -> Path:
    return out.with_name(out.name + ".report.json")


def _matches(path: Path, pattern: str) -> bool:
    """Whether the glob `pattern` would find `path` (`**` patterns: leniently, '/' included)."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(str(path), pattern)
    parts, wanted = Path(pattern).parts, path.parts
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(wanted, parts, strict=True))


def plan_jobs(plan: Plan, stage: PrepareStagePlan, data_root: str | os.PathLike[str] | None,
              *, report: PrepareReport | None = None) -> list[FileJob]:
    """Every raw file of the stage's sources, as jobs: in the stage's order of sources, then by path.

    Raises:
        PrepareError: a source whose `raw` patterns match nothing, that has no `paths`, whose outputs
            its `paths` would not find, or two raw files that would make the same token file.
        DataRootError: when a pattern uses `${DATA_ROOT}` and no root is given or set.
    """
    unknown = [f for f in stage.filters if f not in FILTERS]
    if unknown:
        raise PrepareError(f"unknown filters {', '.join(unknown)} (known: {', '.join(FILTERS)})")
    params = FilterParams(ngram_max_period=plan.data.ngram_max_period,
                          ngram_min_repeats=plan.data.ngram_min_repeats)
    jobs: list[FileJob] = []
    owners: dict[Path, tuple[str, Path]] = {}
    for name in stage.sources:
        if name not in plan.sources:
            raise PrepareError(f"stage {stage.name!r} names source {name!r}, which the plan does not have")
        source = plan.sources[name]
        if not source.raw:
            if report is not None:
                report.not_prepared.append(name)
            continue
        if not source.paths:
            raise PrepareError(f"source {name} has raw files but no `paths`: prepare writes its token files into "
                               f"the directory of the first `paths` entry")
        raws = src.raw_files(name, source, data_root)
        if not raws:
            wanted = ", ".join(src.expand(p, data_root) for p in source.raw)
            raise PrepareError(f"no raw files match {wanted} for source {name}")
        patterns = [src.glob_pattern(p, data_root, what=f"source {name}'s paths") for p in source.paths]
        directory = output_dir(patterns[0])
        for raw in raws:
            out = directory / output_name(raw)
            if out in owners:
                other_source, other_raw = owners[out]
                raise PrepareError(f"{raw} (source {name}) and {other_raw} (source {other_source}) would both be "
                                   f"written to {out}: rename one")
            if not any(_matches(out, p) for p in patterns):
                shown = ", ".join(src.expand(p, data_root) for p in source.paths)
                raise PrepareError(f"source {name}: {raw} would be written to {out}, which its paths "
                                   f"({shown}) do not match: the training stages would not read it")
            owners[out] = (name, raw)
            jobs.append(FileJob(source=name, category=source.category, raw=raw, out=out,
                                text_field=stage.text_field,
                                filters=tuple(f for f in stage.filters if applies(f, source.category)),
                                params=params, tokenizer=plan.tokenizer.name, eos_id=plan.tokenizer.eos_id))
    return jobs


# --- one file ---------------------------------------------------------------------------------------------------


def _raw_identity(raw: Path) -> dict[str, Any]:
    stat = os.stat(raw)
    return {"raw": str(raw), "raw_size": stat.st_size, "raw_mtime_ns": stat.st_mtime_ns}


def is_complete(job: FileJob) -> Counts | None:
    """The counts of an earlier run when `job.out` is complete and up to date, else None."""
    outputs = (report_path(job.out), job.out, index_path(job.out))
    if not all(path.is_file() for path in outputs):  # a FIFO or a device in their place would block a read
        return None
    try:
        report = json.loads(report_path(job.out).read_text(encoding="utf-8"))
        if (report.get("version") != REPORT_VERSION or report.get("settings") != job.settings()
                or {k: report.get(k) for k in ("raw", "raw_size", "raw_mtime_ns")} != _raw_identity(job.raw)):
            return None
        counts = Counts.from_dict(report["counts"])
        if index_problem(job.out, counts.docs_out, counts.tokens_out, job.eos_id) is not None:
            return None  # damaged since: redone
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return counts


def _texts(job: FileJob) -> Iterator[str]:
    """The documents' texts, in file order.

    Raises:
        PrepareError: naming file and line, for a line that is not a JSON object with a string under text_field.
    """
    opener = gzip.open if job.raw.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(job.raw, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{job.raw}:{lineno}"
                try:
                    record = json.loads(line)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise PrepareError(f"{where}: not a JSON line: {exc}{_FIX_LINE}") from None
                except RecursionError:  # json's C decoder stops at Python's recursion limit
                    raise PrepareError(f"{where}: not a JSON line: nested too deeply to read{_FIX_LINE}") from None
                if not isinstance(record, dict):
                    raise PrepareError(f"{where}: a JSON {type(record).__name__}, not an object{_FIX_LINE}")
                if job.text_field not in record:
                    raise PrepareError(f"{where}: no {job.text_field!r} field (the stage's text_field); "
                                       f"fields: {', '.join(sorted(record)) or 'none'}{_FIX_LINE}")
                text = record[job.text_field]
                if not isinstance(text, str):
                    raise PrepareError(f"{where}: {job.text_field!r} is a JSON {type(text).__name__}, "
                                       f"not a string{_FIX_LINE}")
                if b"\\u" in line and (surrogate := _SURROGATE.search(text)):  # only a \u escape makes one
                    raise PrepareError(f"{where}: {job.text_field!r} holds a lone surrogate "
                                       f"(\\u{ord(surrogate.group()):04x}), which is not text (no UTF-8 for it)"
                                       f"{_FIX_LINE}")
                yield text
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise PrepareError(f"{job.raw}:{lineno + 1}: cannot decompress: {exc}; the file is damaged: "
                           f"replace it") from None


def _batches(texts: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if len(batch) >= _BATCH_DOCS or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _documents(job: FileJob, tokenizer: TokenizerLike, counts: Counts) -> Iterator[np.ndarray]:
    """The kept documents' tokens, counting everything in `counts`."""
    for name in (*job.filters, EMPTY):
        counts.dropped_docs.setdefault(name, 0)
        counts.dropped_tokens.setdefault(name, 0)
    checks = [(name, FILTERS[name]) for name in job.filters]
    for texts in _batches(_texts(job)):
        for text, ids in zip(texts, tokenizer.encode_batch(texts, num_threads=job.threads), strict=True):
            tokens = np.asarray(ids, dtype=TOKEN_DTYPE)
            size = len(tokens) + 1
            counts.docs_in += 1
            counts.tokens_in += size
            dropped_by = EMPTY if not text else next(
                (name for name, check in checks if check(text, tokens, job.params)), None)
            if dropped_by is not None:
                counts.dropped_docs[dropped_by] += 1
                counts.dropped_tokens[dropped_by] += size
                continue
            counts.docs_out += 1
            counts.tokens_out += size
            yield tokens


_TOKENIZERS: dict[tuple[Any, str], TokenizerLike] = {}


def _load_default(name: str) -> TokenizerLike:
    from olmo2spec.data.tokenizer import load_tokenizer

    return load_tokenizer(name)


def _tokenizer(load: TokenizerLoader | None, name: str) -> TokenizerLike:
    """The tokenizer, loaded once per process."""
    key = (load, name)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = (load or _load_default)(name)
    return _TOKENIZERS[key]


def _remove_leftovers(out: Path) -> None:
    """Temporary files of an earlier, killed run for this output."""
    for sidecar in (out, index_path(out), report_path(out)):
        for leftover in out.parent.glob(f".{sidecar.name}.tmp-*"):
            leftover.unlink(missing_ok=True)


def prepare_file(job: FileJob, load: TokenizerLoader | None = None) -> Counts:
    """Tokenize, filter and write one raw file, then its report sidecar; redo it whatever is there.

    Raises:
        PrepareError: for malformed input, naming file and line, or a tokenizer whose eos is not the plan's.
    """
    tokenizer = _tokenizer(load, job.tokenizer)
    if tokenizer.eos_id != job.eos_id:
        raise PrepareError(f"tokenizer {job.tokenizer!r} has eos id {tokenizer.eos_id}, the plan says {job.eos_id}")
    _remove_leftovers(job.out)
    report_path(job.out).unlink(missing_ok=True)  # the token file is about to change: it is not complete
    counts = Counts()
    identity = _raw_identity(job.raw)
    write_token_file(job.out, _documents(job, tokenizer, counts), job.eos_id)
    write_json_atomic(report_path(job.out), {"version": REPORT_VERSION, **identity, "settings": job.settings(),
                                             "source": job.source, "counts": counts.to_dict()}, parents=True)
    return counts


# --- the stage --------------------------------------------------------------------------------------------------


def _progress(total: int, initial: int, enabled: bool | None) -> Any:
    """A tqdm bar on stderr, one tick per file; off when stderr is not a terminal unless `enabled`."""
    tqdm = importlib.import_module("tqdm").tqdm  # tqdm ships no type information
    disable = not (sys.stderr.isatty() if enabled is None else enabled)
    return tqdm(total=total, initial=initial, unit="file", desc="prepare", file=sys.stderr, disable=disable,
                dynamic_ncols=True)


def prepare(plan: Plan, stage: PrepareStagePlan, data_root: str | os.PathLike[str] | None = None, *,
            workers: int | None = None, progress: bool | None = None,
            load: TokenizerLoader | None = None) -> PrepareReport:
    """Run the prepare stage: every raw file of the stage's sources to a token file, skipping finished ones.

    Args:
        plan: the plan (sources, tokenizer, n-gram thresholds).
        stage: the prepare stage.
        data_root: what `${DATA_ROOT}` stands for (default: the DATA_ROOT environment variable).
        workers: worker processes (default: the CPU count; at most the files to do; 1 runs in this process).
        progress: show a progress bar (default: when stderr is a terminal).
        load: tokenizer name -> tokenizer (default `load_tokenizer`); must be picklable with workers > 1.

    Raises:
        PrepareError: an expected data problem (see `plan_jobs`, `prepare_file`), or no source with raw files.
        DataRootError: when a pattern uses `${DATA_ROOT}` and no root is given or set.
    """
    report = PrepareReport(filters=[*stage.filters, EMPTY])
    jobs = plan_jobs(plan, stage, data_root, report=report)
    if not jobs:
        raise PrepareError(f"nothing to prepare: no source of stage {stage.name!r} declares `raw` files "
                           f"({', '.join(stage.sources) or 'no sources'})")
    results: dict[int, Counts] = {}
    for i, job in enumerate(jobs):
        done = is_complete(job)
        if done is not None:
            results[i] = done
    todo = [i for i in range(len(jobs)) if i not in results]
    count = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // count)
    with _progress(len(jobs), len(results), progress) as bar:
        if count == 1:
            for i in todo:
                results[i] = prepare_file(attrs.evolve(jobs[i], threads=threads), load)
                bar.update(1)
        elif todo:
            with concurrent.futures.ProcessPoolExecutor(max_workers=count) as pool:
                futures = {pool.submit(prepare_file, attrs.evolve(jobs[i], threads=threads), load): i for i in todo}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update(1)
                except concurrent.futures.process.BrokenProcessPool:
                    raise PrepareError("a worker process died (killed, or out of memory?); the files it finished "
                                       "are kept: rerun to go on, with fewer workers if memory is short") from None
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    skipped = set(range(len(jobs))) - set(todo)
    for i, job in enumerate(jobs):
        entry = report.sources.get(job.source)
        if entry is None:
            entry = report.sources[job.source] = SourceReport(name=job.source, out_dir=str(job.out.parent))
        entry.files += 1
        entry.skipped += i in skipped
        entry.raw_bytes += os.stat(job.raw).st_size
        entry.counts.add(results[i])
    return report
