"""Every runner the table of stage kinds names imports and is a function of one run."""

from __future__ import annotations

import inspect

import pytest

from olmo2spec.kinds import STAGE_KINDS, stage_kind


@pytest.mark.parametrize("name", [name for name, row in STAGE_KINDS.items() if row.runnable])
def test_every_runner_imports(name: str) -> None:
    runner = stage_kind(name).load_runner()
    assert callable(runner)
    assert list(inspect.signature(runner).parameters) == ["ctx"]
