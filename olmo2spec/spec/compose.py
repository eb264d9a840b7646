"""Reading recipe files and composing them: `extends`, `include`, and `--set` overrides.

Every value keeps the file, line and column it was written at, so an error in an extended
or included fragment points into that fragment. Merge rules (DESIGN.md): tables merge,
scalars and lists replace, `[[stages]]` merge by `name`; the file itself wins over its
includes, which win over the file it extends.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path as FsPath
from typing import Any

import attrs

from olmo2spec.spec.diagnostics import Diagnostic, Location, Path, Severity, SpecError, dotted
from olmo2spec.spec.files import RecipeFileError, check_reference, read_recipe_text
from olmo2spec.spec.nesting import MAX_CHAIN, MAX_FILES, MAX_NESTING, bracket_overflow, too_deep
from olmo2spec.spec.positions import Positions, scan_positions

__all__ = ["Origin", "Composed", "ComposeCache", "compose", "parse_override", "display_path"]

_TOML_ERROR_AT = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


@attrs.frozen
class Origin:
    """Where a value was written: its key and its value."""

    key: Location
    value: Location


@attrs.frozen
class Composed:
    """A recipe after composition: a plain TOML tree and the origin of every path in it."""

    data: dict[str, Any]
    origins: dict[Path, Origin]
    files: tuple[str, ...]
    """Every file read, in the order read, as shown in messages."""
    paths: tuple[FsPath, ...] = ()
    """The same files, absolute (for hashing)."""
    overrides: tuple[str, ...] = ()
    """The `--set` overrides applied, in order."""

    def locate(self, path: Path, *, at_key: bool = False) -> Location | None:
        """Location of `path`, or of its nearest ancestor that has one."""
        for n in range(len(path), -1, -1):
            origin = self.origins.get(path[:n])
            if origin is not None:
                return origin.key if (at_key or n < len(path)) else origin.value
        return None


# -- located trees: values wrapped with their origin while merging ------------------------
class _LDict(dict[str, Any]):
    origin: Origin | None = None


class _LList(list[Any]):
    origin: Origin | None = None


@attrs.frozen
class _Leaf:
    value: Any
    origin: Origin | None


def _wrap(value: Any, path: Path, origin_of: Any) -> Any:
    origin = origin_of(path)
    if isinstance(value, dict):
        out = _LDict({k: _wrap(v, path + (k,), origin_of) for k, v in value.items()})
        out.origin = origin
        return out
    if isinstance(value, list):
        items = _LList(_wrap(v, path + (i,), origin_of) for i, v in enumerate(value))
        items.origin = origin
        return items
    return _Leaf(value, origin)


def _unwrap(node: Any, path: Path, origins: dict[Path, Origin]) -> Any:
    origin = getattr(node, "origin", None)
    if origin is not None:
        origins[path] = origin
    if isinstance(node, dict):
        return {k: _unwrap(v, path + (k,), origins) for k, v in node.items()}
    if isinstance(node, list):
        return [_unwrap(v, path + (i,), origins) for i, v in enumerate(node)]
    return node.value


def _merge(base: Any, over: Any, path: Path) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = _LDict(base)
        # a table written in several files is located where the winning file writes it
        out.origin = getattr(over, "origin", None) or getattr(base, "origin", None)
        for key, value in over.items():
            out[key] = _merge(base[key], value, path + (key,)) if key in base else value
        return out
    if len(path) == 1 and path[0] in _KEYED_LISTS and isinstance(base, list) and isinstance(over, list):
        return _merge_keyed(base, over, path, _KEYED_LISTS[path[0]])
    return over


_KEYED_LISTS = {"stages": "name", "departures": "field"}
"""Arrays of tables merged item by item, matched by this key: a file restates or adds items, never drops any."""


def _item_key(item: Any, key: str) -> Any:
    if isinstance(item, dict) and isinstance(item.get(key), _Leaf):
        return item[key].value
    return None


def _merge_keyed(base: list[Any], over: list[Any], path: Path, key: str) -> _LList:
    out = _LList(base)
    out.origin = getattr(over, "origin", None) or getattr(base, "origin", None)
    merged: set[Any] = set()
    for item in over:
        name = _item_key(item, key)
        match = [i for i, s in enumerate(base) if name is not None and _item_key(s, key) == name]
        if match and name not in merged:
            out[match[0]] = _merge(out[match[0]], item, path + (match[0],))
            merged.add(name)
        else:  # a new item, or a name used twice in one file (reported by the rules)
            out.append(item)
    return out


# -- files ----------------------------------------------------------------------------------
def display_path(path: FsPath) -> str:
    """A path as users typed it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


class _Composer:
    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.files: list[str] = []
        self.paths: list[FsPath] = []
        self.texts: dict[FsPath, str] = {}
        """Each file's text as read: what a `ComposeCache` compares to reuse the composition."""
        self.too_many = False

    def error(self, code: str, field: str, message: str, hint: str, at: Location | None) -> None:
        self.diagnostics.append(Diagnostic(code, Severity.ERROR, field, message, hint, at))

    def read(self, path: FsPath, stack: Sequence[FsPath], at: Location | None) -> _LDict | None:
        path = FsPath(os.path.normpath(path))  # "a/../b.toml" is b.toml, so cycles are found
        shown = display_path(path)
        if path in stack:
            chain = " -> ".join(display_path(p) for p in [*stack, path])
            self.error("E003", "", f"recipe files extend or include each other in a cycle: {chain}",
                       "remove one of the `extends`/`include` entries in the cycle", at)
            return None
        if len(stack) >= MAX_CHAIN:
            ends = [display_path(p) for p in stack[:2]] + ["..."] + [display_path(p) for p in [stack[-1], path]]
            self.error("E004", "", f"`extends`/`include` chain of more than {MAX_CHAIN} files: "
                       f"{' -> '.join(ends)}", "flatten the chain: a fragment can include several files", at)
            return None
        if len(self.files) >= MAX_FILES:
            if not self.too_many:  # once: every further reference would repeat it
                self.too_many = True
                self.error("E004", "", f"more than {MAX_FILES} recipe files to read (a file included more than "
                           "once is read each time)", "include each fragment once", at)
            return None
        try:
            text = read_recipe_text(path, shown)
        except FileNotFoundError:
            self.error("E002", "", f"file not found: {shown}",
                       "paths in `extends` and `include` are relative to the file naming them", at)
            return None
        except RecipeFileError as exc:
            self.error("E002", "", str(exc), exc.hint, at)
            return None
        self.files.append(shown)
        self.paths.append(path)
        self.texts[path] = text
        raw = self.parse(text, shown)
        if raw is None:
            return None
        positions = scan_positions(text)
        tree = _wrap(raw, (), lambda p: _origin(shown, positions, p))
        start = Location(shown, 1, 1)
        tree.origin = Origin(start, start)  # where a missing top-level table is reported
        return self.compose_tree(tree, path, [*stack, path])

    def parse(self, text: str, shown: str) -> dict[str, Any] | None:
        """tomllib's tree, or None (reported) for invalid TOML or nesting past MAX_NESTING."""
        offset = bracket_overflow(text)
        if offset is not None:  # before tomllib, which recurses on every bracket
            line = text.count("\n", 0, offset) + 1
            at = Location(shown, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)
            self.error("E004", "", f"arrays and tables nest more than {MAX_NESTING} deep",
                       "recipes nest a few levels; flatten the value", at)
            return None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self.toml_error(shown, str(exc))
            return None
        deep = too_deep(raw)
        if deep is not None:  # dotted keys and table headers nest without brackets
            self.error("E004", dotted(deep[:3]) + "...", f"keys nest more than {MAX_NESTING} deep",
                       "recipes nest a few levels; shorten the dotted key", Location(shown, 1, 1))
            return None
        return raw

    def toml_error(self, shown: str, message: str) -> None:
        m = _TOML_ERROR_AT.fullmatch(message)
        at = Location(shown, int(m["line"]), int(m["col"])) if m else Location(shown, 1, 1)
        text = m["msg"] if m else message
        self.error("E001", "", f"invalid TOML: {text}",
                   "see https://toml.io for the syntax; strings need quotes", at)

    def compose_tree(self, tree: _LDict, path: FsPath, stack: list[FsPath]) -> _LDict:
        extends = tree.pop("extends", None)
        include = tree.pop("include", None)
        result = _LDict()
        for ref in self.references(extends, include):
            at = ref.origin.value if ref.origin else None
            try:
                check_reference(ref.value)
            except RecipeFileError as exc:
                self.error("E002", "", str(exc), exc.hint, at)
                continue
            part = self.read(path.parent / ref.value, stack, at)
            if part is not None:
                result = _merge(result, part, ())
        merged: _LDict = _merge(result, tree, ())
        return merged

    def references(self, extends: Any, include: Any) -> Iterator[_Leaf]:
        if extends is not None:
            if isinstance(extends, _Leaf) and isinstance(extends.value, str):
                yield extends
            else:
                self.bad_reference("extends", extends, "a file name, e.g. extends = \"base/olmo2.toml\"")
        if include is not None:
            if not isinstance(include, list):
                self.bad_reference("include", include, "a list, e.g. include = [\"mixes/a.toml\"]")
                return
            for item in include:
                if isinstance(item, _Leaf) and isinstance(item.value, str):
                    yield item
                else:
                    self.bad_reference("include", item, "a list of file names")

    def bad_reference(self, key: str, node: Any, expected: str) -> None:
        origin = getattr(node, "origin", None)
        self.error("E012", key, f"expected {expected}", "", origin.value if origin else None)


def _origin(file: str, positions: Positions, path: Path) -> Origin | None:
    key = positions.find(path, at_key=True)
    value = positions.find(path)
    if key is None or value is None:
        return None
    return Origin(Location(file, *key), Location(file, *value))


# -- overrides ------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`stages.pretrain.batch_size=512` -> (("stages", "pretrain", "batch_size"), 512).

    The value is read as a TOML value (so `--set model.norm="pre"` and `--set seeds=[1,2]`
    work); a bare word that is not valid TOML is taken as a string.

    Raises:
        ValueError: when there is no `=` or the key is empty.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    if key.count(".") >= MAX_NESTING or bracket_overflow(value) is not None:
        raise ValueError(f"nests more than {MAX_NESTING} deep")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return tuple(part.strip() for part in key.strip().split(".")), parsed


def _copy(node: Any) -> Any:
    """A shallow copy of a table or list, origin kept: overrides copy the path they change, never the rest,
    so a composition a `ComposeCache` keeps is never changed under it."""
    out = _LDict(node) if isinstance(node, dict) else _LList(node)
    out.origin = node.origin
    return out


def _apply_override(composer: _Composer, tree: _LDict, index: int, text: str) -> _LDict:
    """The tree with one override applied (`tree` itself is not changed)."""
    at = Location("--set", index, 1)
    origin = Origin(at, at)
    try:
        keys, value = parse_override(text)
    except ValueError as exc:
        composer.error("E070", "", f"bad --set: {exc}", "write --set stages.pretrain.lr.peak=4e-4", at)
        return tree
    root: _LDict = _copy(tree)
    node: Any = root
    for key in keys[:-1]:
        if isinstance(node, list):  # stages are addressed by name
            named = [i for i, s in enumerate(node) if _item_key(s, "name") == key]
            if not named:
                names = [str(_item_key(s, "name")) for s in node]
                close = difflib.get_close_matches(key, names, n=1)
                composer.error("E070", ".".join(keys), f"no stage named {key!r} (stages: {', '.join(names)})",
                               f"did you mean {close[0]!r}?" if close else "", at)
                return tree
            node[named[0]] = node = _copy(node[named[0]])
            continue
        child = node.get(key)
        if isinstance(child, (dict, list)):
            child = _copy(child)
        else:
            child = _LDict()
            child.origin = origin
        node[key] = node = child
    if not isinstance(node, dict):
        composer.error("E070", ".".join(keys), "cannot set a whole stage; name a field of it", "", at)
        return tree
    node[keys[-1]] = _wrap(value, (), lambda _p: origin)
    return root


@attrs.define
class _Kept:
    root: FsPath
    cwd: str
    """Messages show paths relative to it (`display_path`)."""
    texts: dict[FsPath, str]
    tree: _LDict
    files: list[str]
    paths: list[FsPath]


class ComposeCache:
    """A recipe's composed files, reused while every file still reads the same text.

    For callers that re-check one recipe under changing overrides (the notebook's mix explorer):
    reading, parsing and merging the files is most of a check, and only the overrides change.
    Every use re-reads each file and compares its text, so an edit on disk is always seen.
    """

    def __init__(self) -> None:
        self._kept: _Kept | None = None

    def tree(self, root: FsPath, composer: _Composer) -> _LDict | None:
        """The kept composition of `root`, its files recorded in `composer`; None when any file changed."""
        kept = self._kept
        if kept is None or kept.root != root or kept.cwd != os.getcwd():
            return None
        for path, text in kept.texts.items():
            try:
                if read_recipe_text(path, display_path(path)) != text:
                    return None
            except (OSError, RecipeFileError):
                return None
        composer.files, composer.paths, composer.texts = list(kept.files), list(kept.paths), dict(kept.texts)
        return kept.tree

    def keep(self, root: FsPath, tree: _LDict, composer: _Composer) -> None:
        self._kept = _Kept(root, os.getcwd(), dict(composer.texts), tree, list(composer.files),
                           list(composer.paths))


def compose(path: str | os.PathLike[str], overrides: Sequence[str] = (), *,
            cache: ComposeCache | None = None) -> Composed:
    """Read a recipe, follow `extends`/`include`, apply `--set` overrides.

    With a `cache`, the files' composition is kept there and reused while their texts are unchanged.

    Raises:
        SpecError: with every problem found, when a file is missing, unreadable, not TOML,
            or part of a cycle.
    """
    composer = _Composer()
    root = FsPath(path).absolute()
    tree = cache.tree(root, composer) if cache is not None else None
    if tree is None:
        tree = composer.read(root, [], None)
        if cache is not None and tree is not None and not composer.diagnostics:
            cache.keep(root, tree, composer)
    if tree is not None:
        for index, text in enumerate(overrides, start=1):
            tree = _apply_override(composer, tree, index, text)
    if composer.diagnostics or tree is None:
        raise SpecError(composer.diagnostics)
    origins: dict[Path, Origin] = {}
    data = _unwrap(tree, (), origins)
    return Composed(data, origins, tuple(composer.files), tuple(composer.paths), tuple(overrides))
