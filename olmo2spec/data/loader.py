"""The mixture loader: the plan's mix for one run, as fixed-length instances in global batches.

- Instances are windows of `seq_len` tokens cut from each token file separately (the remainder
  of a file is dropped), as OLMo does; documents may span instances.
- Each source contributes its planned share: a source % of 250 is two whole copies of its
  instances plus a seeded sample of half of them.
- One global shuffle of that pool, seeded by the run's data-order seed (a `Permutation`, so
  nothing of pool size is held in memory); a run longer than the pool reshuffles per epoch.
- Global batch b is pool positions [b*B, (b+1)*B); rank r of W reads its contiguous slice.
  So batch b depends only on (seed, b): resuming at step N needs no loader state, and the
  sequence of global batches is the same at any world size.
- Instances holding a repeated n-gram run (section 3.1) get their labels masked, where the stage's plan
  says so (`ngram_masking`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import numpy as np

from olmo2spec.data.ngrams import repeated_ngram_rows
from olmo2spec.data.permutation import Permutation, splitmix64
from olmo2spec.data.sources import token_files
from olmo2spec.data.tokenfile import read_tokens, token_count
from olmo2spec.plan.plan import Plan, RunPlan, TrainStagePlan

__all__ = ["Batch", "MixtureLoader", "SourceShare", "LoaderError", "loader_for_run"]


class LoaderError(Exception):
    """The mix cannot be realised from the files found (a source with no instances, a bad batch split)."""


@attrs.frozen
class SourceShare:
    """One source of a mix: its token files and how many times its instances are used."""

    name: str
    files: Sequence[Path]
    repeats: float
    """source % / 100 from the plan."""


@attrs.frozen(eq=False)
class Batch:
    step: int
    tokens: np.ndarray
    """(rows, seq_len) int64: this rank's slice of global batch `step`."""
    label_mask: np.ndarray
    """(rows,) bool: False where the instance's labels are masked (repeated n-grams)."""
    sources: np.ndarray
    """(rows,) int64: index of each row's source in `MixtureLoader.source_names`."""

    @property
    def masked(self) -> int:
        return int((~self.label_mask).sum())


@attrs.frozen
class _Segment:
    source: int
    size: int
    sample: Permutation | None
    """For the fractional copy: which instances of the source it takes (the first `size` of a permutation)."""


class MixtureLoader:
    """Batches of one run of a training stage, for one data-parallel rank."""

    def __init__(self, sources: Sequence[SourceShare], *, seq_len: int, global_batch: int, seed: int,
                 rank: int = 0, world_size: int = 1, mask_period: int = 13, mask_repeats: int = 32,
                 masking: bool = True) -> None:
        if global_batch % world_size:
            raise LoaderError(f"global batch {global_batch} does not split over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise LoaderError(f"rank {rank} outside world size {world_size}")
        self.seq_len, self.global_batch, self.seed = seq_len, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.mask_period, self.mask_repeats, self.masking = mask_period, mask_repeats, masking
        self.source_names = [s.name for s in sources]
        self._files = [list(s.files) for s in sources]
        # per source: cumulative instance counts over its files
        self._cum = [np.cumsum([0] + [token_count(f) // seq_len for f in files]) for files in self._files]
        self._segments = self._build_segments(sources)
        self.pool_size = sum(seg.size for seg in self._segments)
        if self.pool_size == 0:
            raise LoaderError("the mix has no instances: are the token files empty or shorter than seq_len?")
        self._seg_starts = np.cumsum([0] + [seg.size for seg in self._segments])
        self._maps: dict[tuple[int, int], np.ndarray] = {}
        self._epoch_perm: dict[int, Permutation] = {}

    def _build_segments(self, sources: Sequence[SourceShare]) -> list[_Segment]:
        segments = []
        for i, share in enumerate(sources):
            available = int(self._cum[i][-1])
            if available == 0 and share.repeats > 0:
                raise LoaderError(f"source {share.name!r} has no instance of {self.seq_len} tokens "
                                  f"in its {len(share.files)} file(s)")
            whole = math.floor(share.repeats + 1e-9)
            segments += [_Segment(i, available, None)] * whole
            extra = round((share.repeats - whole) * available)
            if extra > 0:
                key = int(splitmix64(np.array([self.seed, i], dtype=np.uint64)).sum() % 2**62)
                segments.append(_Segment(i, extra, Permutation(available, key)))
        return segments

    # -- which instances -----------------------------------------------------------------
    def instances_per_source(self) -> dict[str, int]:
        """Instances each source contributes to one pass over the pool."""
        out = dict.fromkeys(self.source_names, 0)
        for seg in self._segments:
            out[self.source_names[seg.source]] += seg.size
        return out

    def _permutation(self, epoch: int) -> Permutation:
        if epoch not in self._epoch_perm:
            self._epoch_perm[epoch] = Permutation(self.pool_size, self.seed * 1_000_003 + epoch)
        return self._epoch_perm[epoch]

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global stream positions -> (source, file, token offset) of each instance."""
        positions = np.asarray(positions, dtype=np.int64)
        pool = np.empty_like(positions)
        epochs = positions // self.pool_size
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            pool[chosen] = self._permutation(int(epoch))(positions[chosen] % self.pool_size)
        seg_index = np.searchsorted(self._seg_starts, pool, side="right") - 1
        sources = np.empty_like(pool)
        local = pool - self._seg_starts[seg_index]
        for s in np.unique(seg_index):
            seg = self._segments[int(s)]
            chosen = seg_index == s
            sources[chosen] = seg.source
            if seg.sample is not None:
                local[chosen] = seg.sample(local[chosen])
        files = np.empty_like(pool)
        offsets = np.empty_like(pool)
        for src in np.unique(sources):
            chosen = sources == src
            cum = self._cum[int(src)]
            f = np.searchsorted(cum, local[chosen], side="right") - 1
            files[chosen] = f
            offsets[chosen] = (local[chosen] - cum[f]) * self.seq_len
        return sources, files, offsets

    # -- reading ---------------------------------------------------------------------------
    def _tokens(self, source: int, file: int) -> np.ndarray:
        key = (source, file)
        if key not in self._maps:
            self._maps[key] = read_tokens(self._files[source][file])
        return self._maps[key]

    def batch(self, step: int) -> Batch:
        """This rank's rows of global batch `step`."""
        start = step * self.global_batch + self.rank * self.local_batch
        sources, files, offsets = self.locate(np.arange(start, start + self.local_batch))
        tokens = np.empty((self.local_batch, self.seq_len), dtype=np.int64)
        for row, (s, f, o) in enumerate(zip(sources.tolist(), files.tolist(), offsets.tolist(), strict=True)):
            tokens[row] = self._tokens(s, f)[o:o + self.seq_len]
        if self.masking:
            mask = ~repeated_ngram_rows(tokens, self.mask_period, self.mask_repeats)
        else:
            mask = np.ones(self.local_batch, dtype=bool)
        return Batch(step=step, tokens=tokens, label_mask=mask, sources=sources)

    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Batches `start`, `start + 1`, ... (forever when `stop` is None)."""
        step = start
        while stop is None or step < stop:
            yield self.batch(step)
            step += 1


def loader_for_run(plan: Plan, stage: TrainStagePlan, run: RunPlan, *, data_root: str | os.PathLike[str] | None,
                   rank: int = 0, world_size: int = 1) -> MixtureLoader:
    """The loader of one run of a training stage, from the plan alone (and where the data lives).

    Raises:
        LoaderError: when a source of the run's mix has no token files.
    """
    mix = plan.mixes[run.mix]
    shares = []
    for row in mix.rows:
        files = token_files(row.source, plan.sources[row.source], data_root)
        if not files and row.source_pct > 0:
            patterns = ", ".join(plan.sources[row.source].paths) or "(no paths)"
            raise LoaderError(f"source {row.source!r} of mix {mix.name!r} has no token files matching {patterns}: "
                              "run the prepare stage, or set DATA_ROOT")
        shares.append(SourceShare(row.source, files, row.source_pct / 100))
    data = plan.data
    return MixtureLoader(shares, seq_len=stage.seq_len, global_batch=stage.batch_size, seed=run.seed, rank=rank,
                         world_size=world_size, mask_period=data.ngram_max_period, mask_repeats=data.ngram_min_repeats,
                         masking=stage.ngram_masking)
