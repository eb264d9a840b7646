from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
PAPER_SPECS = ["1b", "7b", "13b", "32b"]
SHIPPED_SPECS = [*PAPER_SPECS, "tiny"]


@pytest.fixture(scope="session")
def plans():
    """The plan of every shipped spec, built once."""
    from olmo2spec.compiler import check

    return {name: check(SPECS / f"{name}.toml").plan for name in SHIPPED_SPECS}
