"""A seeded permutation of [0, n) evaluated on demand: the loader's shuffle without an index array.

A 4-round Feistel network on [0, 4^h) (4^h >= n) with splitmix64 round functions is a bijection;
walking the cycle until the value falls below n restricts it to [0, n). OLMo's trillion-token
mixes have about 10^9 instances: an explicit shuffled index would take gigabytes per rank,
while this takes a few integers, and batch b of a run is a pure function of (seed, b).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Permutation", "splitmix64"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fast, well-mixed 64-bit hash (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class Permutation:
    """A bijection of [0, n) chosen by `seed`; `perm(indices)` maps an array of indices at once."""

    ROUNDS = 4

    def __init__(self, n: int, seed: int) -> None:
        if n <= 0:
            raise ValueError(f"a permutation needs n > 0 (got {n})")
        self.n = n
        self.half_bits = max(1, -(-max(1, (n - 1).bit_length()) // 2))
        self.mask = np.uint64((1 << self.half_bits) - 1)
        seeds = np.arange(self.ROUNDS, dtype=np.uint64) + np.uint64(seed % 2**63) * np.uint64(self.ROUNDS)
        self.keys = splitmix64(seeds)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.half_bits)
        left, right = x >> shift, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (splitmix64(right ^ key) & self.mask)
        return (left << shift) | right

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        x = np.asarray(indices, dtype=np.uint64)
        if x.size and (x.max() >= self.n):
            raise IndexError(f"index out of range for a permutation of {self.n}")
        y = self._encrypt(x)
        outside = y >= self.n
        while outside.any():  # cycle walking: at most a few rounds, since 4^h < 4n
            y[outside] = self._encrypt(y[outside])
            outside = y >= self.n
        return y.astype(np.int64)
