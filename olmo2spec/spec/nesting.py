"""Bounds on how deep a recipe may nest, so that no recursion (tomllib's, or the compiler's own
merge, located-tree and structuring walks) can exhaust the stack on a hostile file.

Real recipes nest 5 levels (stages -> [n] -> lr -> schedule) and extend 3 files deep; the limits
leave room for anything reasonable and stop `a = [[[[...]]]]` 10,000 deep or a 200-file chain.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_NESTING", "MAX_CHAIN", "MAX_FILES", "bracket_overflow", "too_deep"]

MAX_NESTING = 64
"""Deepest nesting of tables and arrays in a composed recipe."""
MAX_CHAIN = 32
"""Most files in one chain of `extends`/`include`."""
MAX_FILES = 256
"""Most file reads for one recipe: a file included twice by each of 25 chained files is read 2**25 times."""


def bracket_overflow(text: str, limit: int = MAX_NESTING) -> int | None:
    """Offset of the first `[` or `{` nested more than `limit` deep, or None.

    A scan that skips strings and comments, run before tomllib (which recurses on each
    bracket); it only needs to agree with tomllib on well-formed text.
    """
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            i = _string_end(text, i)
            continue
        elif c in "[{":
            depth += 1
            if depth > limit:
                return i
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def _string_end(text: str, i: int) -> int:
    """Offset just past the string starting at `i` (basic or literal, one line or three quotes)."""
    quote = text[i]
    closer = quote * 3 if text.startswith(quote * 3, i) else quote
    j = i + len(closer)
    while j < len(text):
        if quote == '"' and text[j] == "\\":
            j += 2
        elif text.startswith(closer, j):
            return j + len(closer)
        elif text[j] == "\n" and len(closer) == 1:
            return j  # an unclosed one-line string: tomllib reports it
        else:
            j += 1
    return j


def too_deep(tree: Any, limit: int = MAX_NESTING) -> tuple[Any, ...] | None:
    """The path to a value nested more than `limit` deep in a parsed tree, or None; without recursion.

    Dotted keys (`a.b.c... = 1`) and table headers nest without brackets, so the parsed
    tree is measured too.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(tree, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > limit:
            return path
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*path, k)) for k, v in enumerate(node))
    return None
