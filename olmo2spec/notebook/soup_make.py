"""Making a soup from the notebook: the soup stage's own functions, into `<checkpoint root>/notebook-soups/<name>/`.

The weights are normalised by the compiler's rule (`normalise_soup_weights`, the checker's E036), the
ingredients checked and souped by `soup_checked` (what the soup stage calls), the result exported by
`export_hf` beside it (`hf/`). A soup already made from the same checkpoints (their COMPLETE markers) and
weights is reused (`why_soup_again`, as the stage decides); another under the same name (damaged, or of other
checkpoints or weights) is refused, naming why. Every refusal is a `SoupRefused` carrying the runtime's own message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from olmo2spec.notebook.soup_ingredients import Ingredient, plan_for
from olmo2spec.plan.plan import Plan
from olmo2spec.plan.soup_weights import SoupWeightsError, normalise_soup_weights
from olmo2spec.runtime.checkpoint import COMPLETE, CheckpointError, marker_digest, read_marker, step_dir
from olmo2spec.runtime.demo_report import CACHE

__all__ = ["SOUPS", "SoupRefused", "MadeSoup", "weights_for", "default_name", "make_soup", "earlier_soups"]

SOUPS = "notebook-soups"
"""The directory under the checkpoint root that holds the notebook's soups, one directory each."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class SoupRefused(Exception):
    """The soup cannot be made: the message is the runtime's (or the checker's) own."""


@attrs.frozen(kw_only=True)
class MadeSoup:
    name: str
    step: Path
    """The soup's checkpoint (`<dir>/step-0000000`)."""
    hf: Path | None
    """Its Hugging Face export; None when the model has none (`note` says why)."""
    reused: bool
    """Made earlier from the same checkpoints and weights."""
    note: str = ""


def weights_for(raw: Sequence[float], names: Sequence[str]) -> list[float]:
    """The weights the soup uses: `raw` normalised as the compiler normalises a soup stage's.

    Raises:
        SoupRefused: no ingredient, or weights the checker would refuse (E036), with its message and fix.
    """
    if not names:
        raise SoupRefused("a soup needs at least one ingredient: tick one or more runs")
    try:
        return normalise_soup_weights([float(w) for w in raw], names)
    except SoupWeightsError as exc:
        raise SoupRefused(f"error[E036]: weights: {exc.message} ({exc.fix})") from None


def default_name(ingredients: Sequence[Ingredient], weights: Sequence[float]) -> str:
    """`soup-` and a digest of the checkpoints (their paths and COMPLETE markers) and weights: the same choice
    finds the same soup again, and a run trained again to the same step makes another.

    Raises:
        CheckpointError: an ingredient's marker cannot be read (it changed since it was listed).
    """
    recipe = json.dumps([[str(i.path), marker_digest(i.path), w] for i, w in zip(ingredients, weights, strict=True)])
    return f"soup-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def _plan(step: Path, fallback: Plan | None) -> Plan:
    try:
        plan = plan_for(step, fallback)
    except CheckpointError as exc:
        raise SoupRefused(str(exc)) from None
    if plan is None:
        raise SoupRefused(f"checkpoint {step} carries no plan.json and no bundle was given: set OLMO2SPEC_BUNDLE to "
                          "the bundle that trained it")
    return plan


def make_soup(root: Path, ingredients: Sequence[Ingredient], raw_weights: Sequence[float], *, name: str = "",
              fallback: Plan | None = None, say: Callable[[str], None] = lambda _text: None) -> MadeSoup:
    """Soup `ingredients` with `raw_weights` (normalised first) into `root/notebook-soups/<name>/`, and export it.

    Raises:
        SoupRefused: bad weights or name, ingredients that cannot be souped, an export that failed.
    """
    from olmo2spec.runtime.export_hf import ExportError, export_hf, hf_config
    from olmo2spec.runtime.soup import SoupError, soup_checked, soup_meta, why_soup_again

    names = [i.run for i in ingredients]
    weights = weights_for(raw_weights, names)
    try:
        name = name.strip() or default_name(ingredients, weights)
    except CheckpointError as exc:  # an ingredient's marker changed since it was listed
        raise SoupRefused(str(exc)) from None
    if not _NAME.fullmatch(name):
        raise SoupRefused(f"soup name {name!r}: use letters, digits, '.', '_' and '-' (a directory name)")
    soup_dir = root / SOUPS / name
    out = step_dir(soup_dir, 0)
    paths = [i.path for i in ingredients]
    plan = _plan(paths[0], fallback)
    try:
        meta = soup_meta(name, names, paths, weights)
    except CheckpointError as exc:  # an ingredient's marker changed since it was listed
        raise SoupRefused(str(exc)) from None
    why = why_soup_again(out, meta) if (out / COMPLETE).is_file() else "is not made yet"
    reused = why is None
    if not reused:
        if (out / COMPLETE).is_file():  # the soup stage would make it again; here it may be someone's: ask
            raise SoupRefused(f"soup {name}: {out} {why}: remove {soup_dir} to soup again, or choose another name")
        say(f"souping {len(paths)} ingredients into {out}")
        try:
            soup_checked(paths, weights, out, meta=meta, names=names, plan=plan)
        except SoupError as exc:
            raise SoupRefused(str(exc)) from None
        except OSError as exc:
            raise SoupRefused(f"writing {out} failed: {exc}") from None
        (soup_dir / CACHE).unlink(missing_ok=True)  # evaluations of an earlier soup of this name
    hf = soup_dir / "hf"
    if reused and (hf / "config.json").is_file():  # exports are atomic: a config.json means a whole one
        return MadeSoup(name=name, step=out, hf=hf, reused=True)
    try:
        hf_config(plan)
    except ExportError as exc:  # a model HF's Olmo2 cannot represent: the soup itself is fine
        return MadeSoup(name=name, step=out, hf=None, reused=reused, note=f"no Hugging Face export: {exc}")
    say(f"exporting the soup to {hf}")
    try:
        export_hf(out, plan, hf)
    except (ExportError, OSError) as exc:
        raise SoupRefused(f"the soup is in {out}, but its Hugging Face export failed: {exc}") from None
    return MadeSoup(name=name, step=out, hf=hf, reused=reused)


def earlier_soups(root: Path) -> dict[str, dict[str, Any]]:
    """The complete soups made by the notebook under `root`: name -> COMPLETE marker (ingredients, weights)."""
    found: dict[str, dict[str, Any]] = {}
    base = root / SOUPS
    for soup_dir in sorted(base.iterdir()) if base.is_dir() else []:
        step = step_dir(soup_dir, 0)
        if (step / COMPLETE).is_file():
            try:
                found[soup_dir.name] = read_marker(step)
            except CheckpointError:
                continue
    return found
