"""`ComposeCache`: a recipe re-checked under new overrides reuses its files' composition, with results
identical to a fresh check, overrides that never leak into what is kept, and edits on disk always seen."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SPECS

from olmo2spec.compiler import check
from olmo2spec.spec.compose import ComposeCache

OVERRIDES = ['mixes.dolmino-100b.source_pct.dolmino-flan=91', 'stages.anneal-100b.steps=10000', "recipe.seed=7"]


def test_cached_checks_equal_fresh_ones_and_overrides_do_not_leak() -> None:
    cache = ComposeCache()
    plain = check(SPECS / "13b.toml", cache=cache)
    edited = check(SPECS / "13b.toml", OVERRIDES, cache=cache)
    fresh = check(SPECS / "13b.toml", OVERRIDES)
    assert edited.composed == fresh.composed and edited.plan == fresh.plan
    again = check(SPECS / "13b.toml", cache=cache)
    assert again.composed == plain.composed and again.plan == plain.plan
    assert again.composed.data["recipe"]["seed"] != 7


def test_an_edit_on_disk_is_seen(tmp_path: Path) -> None:
    shutil.copytree(SPECS, tmp_path / "specs")
    recipe, mixes = tmp_path / "specs" / "13b.toml", tmp_path / "specs" / "mixes" / "dolmino-mix-1124.toml"
    cache = ComposeCache()
    assert check(recipe, cache=cache).plan.mixes["dolmino-50b"].rows[1].source_pct == 50.0
    text = mixes.read_text(encoding="utf-8")
    mixes.write_text(text.replace("dolmino-flan = 50.0", "dolmino-flan = 40.0"), encoding="utf-8")  # same size
    assert check(recipe, cache=cache).plan.mixes["dolmino-50b"].rows[1].source_pct == 40.0
