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


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """A tiny bundle with a short pretraining stage and prepared demo data (tests/runtime)."""
    from runtime_fixtures import make_bundle

    return make_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def uninterrupted(bundle):
    """The checkpoint root of one finished 2-process run of that pretraining."""
    from runtime_fixtures import run_uninterrupted

    return run_uninterrupted(bundle)
