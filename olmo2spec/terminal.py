"""Text for a terminal: what a recipe, a path or a file says is shown, never obeyed.

Every command prints names, descriptions, paths and values that came from someone else. A terminal
obeys control characters (ESC starts a sequence that can move the cursor, clear the screen or set
the window title; C1 0x9b is an 8-bit CSI; CR overwrites the line) and reorders text around the
bidirectional overrides and isolates, so these are printed as visible escapes (`\\x1b`, `\\u202e`).
Undecodable bytes of a path or an argument (held as lone surrogates U+DC80..U+DCFF) show as the
byte, `\\xff`.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 but newline, DEL, C1, the line/paragraph separators, the bidi marks, embeddings, overrides and isolates,
# surrogates
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_OR_NEWLINE = re.compile(f"{_UNSAFE.pattern}|\n")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that did not decode (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(match.group())
    return named or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, *, newlines: bool = False) -> str:
    """`text` with what a terminal would obey shown as escapes; newlines kept when `newlines`."""
    return (_UNSAFE if newlines else _UNSAFE_OR_NEWLINE).sub(_escape, text)
