"""OLMo token files: headerless little-endian uint32 arrays, documents separated by eos.

The extension is `.npy` (as in the released OLMo data) but there is no numpy header: the token
count is the file size / 4, known without opening the file. Beside each file a small sidecar
`<file>.idx` holds the end offset of every document as little-endian uint64, so tools can find
documents without scanning for eos.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["TOKEN_DTYPE", "INDEX_DTYPE", "write_token_file", "read_tokens", "token_count", "index_path",
           "read_doc_ends", "index_problem"]

TOKEN_DTYPE = np.dtype("<u4")
INDEX_DTYPE = np.dtype("<u8")


def index_path(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def token_count(path: Path) -> int:
    """Tokens in a token file, from its size alone."""
    return os.stat(path).st_size // TOKEN_DTYPE.itemsize


def read_tokens(path: Path) -> np.ndarray:
    """The file's tokens as a read-only memory map (an empty array for an empty file)."""
    if token_count(path) == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def read_doc_ends(path: Path) -> np.ndarray:
    """End offset (exclusive, eos included) of every document in `path`."""
    return np.fromfile(index_path(path), dtype=INDEX_DTYPE)


def index_problem(path: Path, docs: int, tokens: int, eos_id: int) -> str | None:
    """What is wrong with a token file and its index, against the documents and tokens it should hold;
    None when both are whole and agree: every end after the one before it, each at an eos, the last at
    the end of the file.

    Raises:
        OSError: when either file cannot be read.
    """
    index = index_path(path)
    token_bytes, index_bytes = os.stat(path).st_size, os.stat(index).st_size
    if token_bytes % TOKEN_DTYPE.itemsize or index_bytes % INDEX_DTYPE.itemsize:
        return "a partial entry at the end (truncated or appended to)"
    if token_bytes // TOKEN_DTYPE.itemsize != tokens or index_bytes // INDEX_DTYPE.itemsize != docs:
        return (f"{token_bytes // TOKEN_DTYPE.itemsize:,} tokens and {index_bytes // INDEX_DTYPE.itemsize:,} "
                f"documents, where {tokens:,} and {docs:,} were written")
    if not docs:
        return None if not tokens else "tokens without documents"
    ends = np.fromfile(index, dtype=INDEX_DTYPE).astype(np.int64)
    if ends[0] < 1 or ends[-1] != tokens or (len(ends) > 1 and not (np.diff(ends) > 0).all()):
        return "document ends out of order or not at the end of the file"
    if not (read_tokens(path)[ends - 1] == eos_id).all():
        return "a document end that is not an eos: the index does not match the token file"
    return None


def write_token_file(path: Path, documents: Iterable[np.ndarray | list[int]], eos_id: int) -> tuple[int, int]:
    """Write documents, each followed by `eos_id`, and the sidecar index; atomically.

    Both files are written under temporary names and renamed into place, the index first, so a
    token file that exists is always complete and indexed.

    Returns:
        (documents, tokens) written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp_index = path.with_name(f".{path.name}.idx.tmp-{os.getpid()}")
    ends: list[int] = []
    total = 0
    try:
        with open(tmp, "wb") as out:
            for doc in documents:
                tokens = np.asarray(doc, dtype=TOKEN_DTYPE)
                out.write(tokens.tobytes())
                out.write(np.array([eos_id], dtype=TOKEN_DTYPE).tobytes())
                total += len(tokens) + 1
                ends.append(total)
        np.asarray(ends, dtype=INDEX_DTYPE).tofile(tmp_index)
        os.replace(tmp_index, index_path(path))
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp_index):
            leftover.unlink(missing_ok=True)
    return len(ends), total
