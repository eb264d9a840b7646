"""The metrics thread: data.instance_filter_warn_share turns a high masked share into one warning a run."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from olmo2spec.runtime.metrics import SUMMED, Interval, MetricsThread  # noqa: E402


def _interval(first_step: int, masked: list[float], instances: list[float]) -> Interval:
    values = {name: torch.ones(len(masked), dtype=torch.float64) for name in (*SUMMED, "grad_norm")}
    values["masked"] = torch.tensor(masked, dtype=torch.float64)
    values["instances"] = torch.tensor(instances, dtype=torch.float64)
    return Interval(first_step, values, lrs=[1e-3] * len(masked), seconds=1.0)


def _warnings(tmp_path: Path, share: float, intervals: list[Interval]) -> list[str]:
    said: list[str] = []
    metrics = MetricsThread(path=tmp_path / "metrics.jsonl", group=None, rank=0, stage="pretrain", total_steps=8,
                            flops_per_token=1.0, peak_flops=0.0, world_size=1, seq_len=8, spike_window=10,
                            spike_sigmas=7.0, stop_file=None, say=said.append, masked_warn_share=share)
    try:
        for interval in intervals:
            metrics.submit(interval).result()
    finally:
        metrics.close()
    return [line for line in said if line.startswith("warning:")]


def test_a_masked_share_over_the_threshold_warns_once_a_run(tmp_path: Path) -> None:
    warned = _warnings(tmp_path, 0.1, [_interval(0, [1, 1], [4, 4]), _interval(2, [2, 2], [4, 4])])
    assert len(warned) == 1
    assert "masked 25.0%" in warned[0] and "data.instance_filter_warn_share 10.0%" in warned[0]


def test_a_masked_share_at_or_under_the_threshold_is_quiet(tmp_path: Path) -> None:
    assert _warnings(tmp_path, 0.25, [_interval(0, [1, 1], [4, 4])]) == []
