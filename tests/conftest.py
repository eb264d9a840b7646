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


@pytest.fixture(scope="module")
def posttrain_root(request, tmp_path_factory):
    """Demo data, a tiny bundle with the test module's OVERRIDES, and a start checkpoint for its STAGE: a random
    model saved final as the run the stage starts from (tests/runtime/test_sft_run.py, test_dpo_run.py)."""
    from posttrain_fixtures import make_posttrain_root

    return make_posttrain_root(tmp_path_factory, request.module.STAGE, request.module.OVERRIDES)


def beyond_not_runnable(err: str) -> str:
    """stderr without the recipes' not-yet-runnable W301 warnings and their hints (tests/test_kinds.py has those)."""
    lines, kept = err.splitlines(keepends=True), []
    for i, line in enumerate(lines):
        if "warning[W301]" in line or (line.startswith("  hint: ") and i and "warning[W301]" in lines[i - 1]):
            continue
        kept.append(line)
    return "".join(kept)


@pytest.fixture
def one_thread():
    """Tiny models run many small ops: one thread is as fast, and immune to busy neighbours."""
    import torch  # here, not at the top: the compiler's tests run without torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
