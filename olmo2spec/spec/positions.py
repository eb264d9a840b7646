"""Source positions for a TOML document: which line and column wrote each key and value.

`tomllib` parses but forgets positions, so this small scanner walks the same text and
records, for every key path, where its key and its value start. It only has to agree with
tomllib on documents tomllib accepted; anything it cannot place falls back to the nearest
enclosing table (see `Positions.find`).
"""

from __future__ import annotations

import re
import tomllib

import attrs

from olmo2spec.spec.diagnostics import Path

__all__ = ["Span", "Positions", "scan_positions"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR_END = set(",]}#\n")


@attrs.frozen
class Span:
    """1-based line and column of a key and of its value."""

    key_line: int
    key_col: int
    value_line: int
    value_col: int


@attrs.define
class Positions:
    """Key path -> span, for one file."""

    spans: dict[Path, Span] = attrs.field(factory=dict)

    def find(self, path: Path, *, at_key: bool = False) -> tuple[int, int] | None:
        """The position of `path`, or of its nearest recorded ancestor."""
        for n in range(len(path), 0, -1):
            span = self.spans.get(path[:n])
            if span is not None:
                if at_key or n < len(path):
                    return span.key_line, span.key_col
                return span.value_line, span.value_col
        return None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.out = Positions()
        self.aot_counts: dict[Path, int] = {}

    # -- low level -------------------------------------------------------------------------
    def pos(self, i: int | None = None) -> tuple[int, int]:
        i = self.i if i is None else i
        lo, hi = 0, len(self.line_starts) - 1
        while lo < hi:  # last line start <= i
            mid = (lo + hi + 1) // 2
            if self.line_starts[mid] <= i:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, i - self.line_starts[lo] + 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def skip_ws(self, newlines: bool = False) -> None:
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif newlines and c == "#":
                self.skip_line()
            else:
                return

    def skip_line(self) -> None:
        j = self.text.find("\n", self.i)
        self.i = len(self.text) if j < 0 else j + 1

    # -- keys and values -------------------------------------------------------------------
    def read_key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c in "\"'":
                parts.append(self.read_string())
            else:
                m = _BARE_KEY.match(self.text, self.i)
                if not m:
                    raise ValueError("bad key")
                parts.append(m.group())
                self.i = m.end()
            self.skip_ws()
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    def read_string(self) -> str:
        q = self.peek()
        if self.peek(3) == q * 3:
            end = self.text.index(q * 3, self.i + 3)
            while self.text[end + 3 : end + 4] == q:  # up to two quotes may close the string
                end += 1
            s = self.text[self.i + 3 : end]
            self.i = end + 3
            return s
        j = self.i + 1
        while self.text[j] != q:
            j += 2 if (q == '"' and self.text[j] == "\\") else 1
        s = self.text[self.i + 1 : j]
        if q == '"' and "\\" in s:  # escapes: the key "a\n" is the two characters a and newline
            s = tomllib.loads(f"k = {self.text[self.i : j + 1]}")["k"]
        self.i = j + 1
        return s

    def read_value(self, path: Path) -> None:
        c = self.peek()
        if c == "{":
            self.i += 1
            self.read_pairs(path, closer="}")
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                line, col = self.pos()
                self.record(path + (index,), (line, col), (line, col))
                self.read_value(path + (index,))
                index += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c in "\"'":
            self.read_string()
        else:
            while self.i < len(self.text) and self.text[self.i] not in _SCALAR_END:
                self.i += 1

    def read_pairs(self, prefix: Path, closer: str) -> None:
        while True:
            self.skip_ws()
            if self.peek() == closer:
                self.i += 1
                return
            self.read_pair(prefix)
            self.skip_ws()
            if self.peek() == ",":
                self.i += 1

    def read_pair(self, prefix: Path) -> None:
        key_at = self.pos()
        key = self.read_key()
        self.skip_ws()
        self.i += 1  # '='
        self.skip_ws()
        path = prefix + key
        self.record(path, key_at, self.pos())
        self.read_value(path)

    def record(self, path: Path, key_at: tuple[int, int], value_at: tuple[int, int]) -> None:
        self.out.spans.setdefault(path, Span(*key_at, *value_at))

    # -- tables ----------------------------------------------------------------------------
    def resolve(self, key: tuple[str, ...], new_aot: bool) -> Path:
        path: Path = ()
        for n, part in enumerate(key):
            path = path + (part,)
            last = n == len(key) - 1
            if last and new_aot:
                index = self.aot_counts.get(path, -1) + 1
                self.aot_counts[path] = index
                path = path + (index,)
            elif path in self.aot_counts:
                path = path + (self.aot_counts[path],)
        return path

    def scan(self) -> Positions:
        prefix: Path = ()
        while self.i < len(self.text):
            self.skip_ws(newlines=True)
            if self.i >= len(self.text):
                break
            at = self.pos()
            if self.peek(2) == "[[":
                self.i += 2
                prefix = self.resolve(self.read_key(), new_aot=True)
                self.record(prefix, at, at)
                self.i += 2
            elif self.peek() == "[":
                self.i += 1
                prefix = self.resolve(self.read_key(), new_aot=False)
                self.record(prefix, at, at)
                self.i += 1
            else:
                self.read_pair(prefix)
            self.skip_ws()
            if self.peek() == "#":
                self.skip_line()
        return self.out


def scan_positions(text: str) -> Positions:
    """Positions of every key in `text`; best effort, never raises."""
    scanner = _Scanner(text)
    try:
        return scanner.scan()
    except (ValueError, IndexError):  # tomllib.TOMLDecodeError is a ValueError
        return scanner.out
