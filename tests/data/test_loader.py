"""The mixture loader: planned shares, determinism, world-size independence, resume."""

from __future__ import annotations

import numpy as np
import pytest

from olmo2spec.data.loader import LoaderError, MixtureLoader, SourceShare
from olmo2spec.data.permutation import Permutation
from olmo2spec.data.tokenfile import write_token_file

SEQ = 16


def _source(tmp_path, name, tokens, files=3, value=None):
    """A source of `files` token files holding `tokens` tokens in all (ids mark the source)."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    paths = []
    for i in range(files):
        body = rng.integers(0, 200, size=tokens // files - 1) if value is None else np.full(tokens // files - 1, value)
        path = tmp_path / name / f"{i:03d}.npy"
        write_token_file(path, [body], eos_id=255)
        paths.append(path)
    return paths


@pytest.fixture
def mix(tmp_path):
    return [
        SourceShare("web", _source(tmp_path, "web", 160_000), 0.5),
        SourceShare("code", _source(tmp_path, "code", 40_000), 1.0),
        SourceShare("math", _source(tmp_path, "math", 8_000), 2.5),  # two copies and a half
    ]


def _loader(mix, **kw):
    args = dict(seq_len=SEQ, global_batch=32, seed=42)
    return MixtureLoader(mix, **(args | kw))


def test_permutation_is_a_bijection_for_any_size():
    for n in (1, 2, 3, 7, 64, 65, 1000, 4099):
        values = Permutation(n, seed=3)(np.arange(n))
        assert sorted(values.tolist()) == list(range(n))
    assert not np.array_equal(Permutation(1000, 1)(np.arange(1000)), Permutation(1000, 2)(np.arange(1000)))


def test_realised_shares_match_the_plan_within_one_percent(mix):
    loader = _loader(mix)
    planned_tokens = {"web": 0.5 * 160_000, "code": 1.0 * 40_000, "math": 2.5 * 8_000}
    total = sum(planned_tokens.values())
    steps = loader.pool_size * 9 // 10 // 32  # a stage that uses 90% of the pool, like a 50B run on 51.5B
    sources = np.concatenate([loader.batch(s).sources for s in range(steps)])
    for i, name in enumerate(loader.source_names):
        realised = float((sources == i).mean())
        assert realised == pytest.approx(planned_tokens[name] / total, abs=0.01), name


def test_fractional_repeats_are_whole_copies_plus_a_sample(mix):
    loader = _loader(mix)
    per_source = loader.instances_per_source()
    available = 8_000 // 3 // SEQ * 3  # instances the math files hold
    assert per_source["math"] == 2 * available + round(0.5 * available)
    assert per_source["web"] == round(0.5 * (160_000 // 3 // SEQ * 3))


def test_one_pass_reads_each_instance_of_a_whole_copy_once(mix):
    loader = _loader([mix[1]])  # code: one copy
    located = loader.locate(np.arange(loader.pool_size))
    pairs = set(zip(located[1].tolist(), located[2].tolist(), strict=True))
    assert len(pairs) == loader.pool_size


def test_same_seed_same_batches_other_seed_other_batches(mix):
    a, b, c = _loader(mix), _loader(mix), _loader(mix, seed=43)
    for step in (0, 1, 17):
        assert np.array_equal(a.batch(step).tokens, b.batch(step).tokens)
    assert not np.array_equal(a.batch(0).tokens, c.batch(0).tokens)


def test_global_batches_are_the_same_at_world_sizes_1_and_2(mix):
    single = _loader(mix)
    ranks = [_loader(mix, rank=r, world_size=2) for r in (0, 1)]
    for step in (0, 3, 40):
        joined = np.concatenate([r.batch(step).tokens for r in ranks])
        assert np.array_equal(joined, single.batch(step).tokens)


def test_resuming_at_step_n_gives_the_batches_of_an_uninterrupted_run(mix):
    uninterrupted = [b.tokens for b in _loader(mix).batches(0, 30)]
    resumed = [b.tokens for b in _loader(mix).batches(20, 30)]  # a fresh loader, as after a restart
    for got, expected in zip(resumed, uninterrupted[20:], strict=True):
        assert np.array_equal(got, expected)


def test_runs_longer_than_the_pool_reshuffle_each_epoch(mix):
    loader = _loader(mix)
    first = loader.locate(np.arange(0, loader.pool_size))
    second = loader.locate(np.arange(loader.pool_size, 2 * loader.pool_size))
    assert sorted(zip(*[x.tolist() for x in first], strict=True)) == sorted(zip(*[x.tolist() for x in second],
                                                                                 strict=True))
    assert not np.array_equal(first[2], second[2])


def test_instances_are_windows_of_their_file(tmp_path):
    paths = _source(tmp_path, "seq", 3 * 100, files=1)
    loader = MixtureLoader([SourceShare("seq", paths, 1.0)], seq_len=SEQ, global_batch=1, seed=0)
    from olmo2spec.data.tokenfile import read_tokens

    tokens = np.asarray(read_tokens(paths[0]))
    _, _, offsets = loader.locate(np.arange(loader.pool_size))
    assert sorted(offsets.tolist()) == list(range(0, (len(tokens) // SEQ) * SEQ, SEQ))
    row = loader.batch(0).tokens[0]
    assert np.array_equal(row, tokens[offsets[0]:offsets[0] + SEQ])


def test_instances_with_repeated_ngrams_are_masked(tmp_path):
    clean = _source(tmp_path, "clean", 64 * 40, files=1)
    repeated = _source(tmp_path, "rep", 64 * 40, files=1, value=7)  # one token over and over
    loader = MixtureLoader([SourceShare("clean", clean, 1.0), SourceShare("rep", repeated, 1.0)], seq_len=64,
                           global_batch=16, seed=1)
    batch = loader.batch(0)
    assert np.array_equal(batch.label_mask, batch.sources == 0)
    assert batch.masked == int((batch.sources == 1).sum()) > 0


def test_errors_are_clear(tmp_path, mix):
    with pytest.raises(LoaderError, match="does not split over 3 ranks"):
        _loader(mix, world_size=3)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(LoaderError, match="source 'empty' has no instance of 16 tokens"):
        MixtureLoader([SourceShare("empty", [empty], 1.0)], seq_len=SEQ, global_batch=4, seed=0)
