"""The plan holds finite numbers only: soup weights normalise without overflow, and plan.json refuses NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest

from olmo2spec.compiler import check
from olmo2spec.plan.plan import SoupStagePlan, to_json

TINY = str(Path(__file__).resolve().parents[2] / "specs" / "tiny.toml")


@pytest.mark.parametrize("weights", ["[1e308, 1e308, 1e308]", "[5e-324, 5e-324, 5e-324]", "[1.7e308, 1e-10, 0]"])
def test_soup_weights_normalise_without_overflow(weights: str) -> None:
    three = "stages.anneal.seeds=[42, 42069, 666]"  # three ingredients (tiny has two)
    soup = check(TINY, [three, f"stages.soup.weights={weights}"]).plan.stage("soup")
    assert isinstance(soup, SoupStagePlan)
    assert all(math.isfinite(w) and w >= 0 for w in soup.weights)
    assert math.isclose(sum(soup.weights), 1.0)
    given = json.loads(weights)
    assert [w > 0 for w in soup.weights] == [w > 0 for w in given]


def test_plan_json_refuses_non_finite_numbers() -> None:
    plan = check(TINY).plan
    with attrs.validators.disabled():  # a plan the resolver would never make
        broken = attrs.evolve(plan, cluster=attrs.evolve(plan.cluster, mfu=math.nan))
    with pytest.raises(ValueError, match="not JSON compliant"):
        to_json(broken)
