"""A soup's weights normalised to sum to 1: one rule for the compiler (E036) and the notebook's soup comparer."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SoupWeightsError", "normalise_soup_weights"]


class SoupWeightsError(ValueError):
    """Weights that cannot be normalised: `message` says why, `fix` what to do (the checker's E036)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def normalise_soup_weights(weights: Sequence[float], names: Sequence[str]) -> list[float]:
    """`weights` (one per ingredient in `names`, none negative) scaled to sum to 1.

    Raises:
        SoupWeightsError: when they sum to 0, or one is lost to 0 next to the largest.
    """
    largest = max(weights)
    if largest <= 0:
        raise SoupWeightsError("weights sum to 0", "give at least one ingredient run a positive weight, or give no "
                               "weights")
    # scaled by the largest first: [1e308] * 3 sums to inf, which would make every weight 0
    scaled = [w / largest for w in weights]
    total = sum(scaled)
    normalised = [w / total for w in scaled]
    lost = [i for i, (w, n) in enumerate(zip(weights, normalised, strict=True)) if w > 0 and n == 0]
    if lost:
        raise SoupWeightsError(f"weight {weights[lost[0]]:g} of {names[lost[0]]} is 0 next to the largest, "
                               f"{largest:g}", "give weights of comparable size; 0 leaves a run out")
    return normalised
