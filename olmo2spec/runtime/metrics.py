"""Metrics off the hot path (paper section 6.4): per-step values stay on the device in small
buffers; every `log_every` steps the buffers are handed to a bookkeeping thread, which copies
them to the host, reduces them over a separate gloo group, and on rank 0 writes JSON Lines,
spike scores and a progress line, and hands the same records to the recipe's TensorBoard / W&B
sinks. The training loop never waits on the device for metrics.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from olmo2spec.runtime.sinks import MetricsSink
from olmo2spec.runtime.spikes import SpikeScore

__all__ = ["StepBuffers", "MetricsThread", "SpikeScore", "Interval"]

# per-step values that add up over ranks
SUMMED = ("ce_sum", "z_sum", "tokens", "instances", "masked")


def _per_example_sums(names: Sequence[str]) -> tuple[str, ...]:
    """A kind's own per-example metrics (DPO's rewards, ...): their sums, and the count they average over."""
    return (*names, "examples") if names else ()


class StepBuffers:
    """Device tensors holding one interval of per-step values, written without syncing."""

    def __init__(self, size: int, device: torch.device, per_example: Sequence[str] = ()) -> None:
        self.size = size
        self.values = {name: torch.zeros(size, dtype=torch.float64, device=device)
                       for name in (*SUMMED, *_per_example_sums(per_example), "grad_norm")}

    def put(self, index: int, **values: torch.Tensor | float) -> None:
        for name, value in values.items():
            self.values[name][index] = value  # a device-side copy: no host sync

    def snapshot(self, count: int) -> dict[str, torch.Tensor]:
        return {name: buf[:count].clone() for name, buf in self.values.items()}


class Interval:
    """What the loop hands over at a boundary: per-step device values and host facts."""

    def __init__(self, first_step: int, values: dict[str, torch.Tensor], lrs: list[float], seconds: float) -> None:
        self.first_step, self.values, self.lrs, self.seconds = first_step, values, lrs, seconds


class MetricsThread:
    """One bookkeeping thread per rank; every rank submits the same intervals in the same order."""

    def __init__(self, *, path: Path, group: dist.ProcessGroup | None, rank: int, stage: str, total_steps: int,
                 flops_per_token: float, peak_flops: float, world_size: int, seq_len: int, spike_window: int,
                 spike_sigmas: float, stop_file: str | None, say: Callable[[str], None] = print,
                 sinks: Sequence[MetricsSink] = (),
                 masked_warn_share: float = 1.0, per_example: Sequence[str] = ()) -> None:
        self.path, self.group, self.rank, self.stage = path, group, rank, stage
        self.total_steps, self.flops_per_token, self.peak_flops = total_steps, flops_per_token, peak_flops
        self.world_size, self.seq_len, self.stop_file, self.say = world_size, seq_len, stop_file, say
        self.sinks = sinks  # rank 0's TensorBoard / W&B, given the same records as metrics.jsonl
        self.loss_spikes = SpikeScore(spike_window, spike_sigmas)
        self.grad_spikes = SpikeScore(spike_window, spike_sigmas)
        self.masked_warn_share, self.warned_masked = masked_warn_share, False
        self.tokens_seen = 0
        self.per_example = tuple(per_example)
        """Names whose step sums (over ranks) are divided by the step's `examples` in the records."""
        self.summed = (*SUMMED, *_per_example_sums(self.per_example))
        self._queue: queue.Queue[tuple[Interval, Future[dict[str, Any]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="olmo2spec-metrics", daemon=True)
        self._thread.start()

    def submit(self, interval: Interval) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        self._queue.put((interval, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        for sink in self.sinks:
            sink.close()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            interval, future = item
            try:
                future.set_result(self._process(interval))
            except BaseException as exc:  # handed to the loop, which decides
                future.set_exception(exc)

    def _reduce(self, interval: Interval) -> dict[str, list[float]]:
        host = {name: tensor.cpu() for name, tensor in interval.values.items()}  # syncs this thread only
        # only rank 0 looks for the stop file, so its row summed over ranks is the shared verdict
        stop = float(bool(self.stop_file) and self.rank == 0 and os.path.exists(self.stop_file or ""))
        stop_row = torch.full_like(host["grad_norm"], stop)
        summed = torch.stack([*(host[name] for name in self.summed), stop_row])
        if self.group is not None:
            dist.all_reduce(summed, group=self.group)  # one collective per interval
        out = {name: summed[i].tolist() for i, name in enumerate(self.summed)}
        out["grad_norm"] = host["grad_norm"].tolist()  # already global (computed over all shards)
        out["stop"] = summed[-1].tolist()
        return out

    def _process(self, interval: Interval) -> dict[str, Any]:
        data = self._reduce(interval)
        first_bad = None
        records: list[dict[str, Any]] = []  # one JSON row a step
        seconds_per_step = interval.seconds / max(1, len(interval.lrs))
        for i, lr in enumerate(interval.lrs):
            counted = data["tokens"][i]
            loss = data["ce_sum"][i] / counted if counted else float("nan")
            z = data["z_sum"][i] / counted if counted else float("nan")
            grad_norm = data["grad_norm"][i]
            step = interval.first_step + i + 1  # steps done after this one
            if first_bad is None and not (math.isfinite(loss) and math.isfinite(grad_norm)):
                first_bad = step
            self.loss_spikes.add(loss)
            self.grad_spikes.add(grad_norm)
            processed = data["instances"][i] * self.seq_len
            self.tokens_seen += int(processed)
            tokens_per_s = processed / max(seconds_per_step, 1e-9)
            mfu = tokens_per_s * self.flops_per_token / (self.peak_flops * self.world_size) if self.peak_flops else 0
            records.append({
                "step": step, "tokens": self.tokens_seen, "lr": lr, "loss": loss, "z_loss": z,
                "grad_norm": grad_norm, "tokens_per_s": tokens_per_s, "mfu": mfu,
                "masked_share": data["masked"][i] / max(1.0, data["instances"][i]),
                "loss_spike_score": self.loss_spikes.score, "grad_spike_score": self.grad_spikes.score,
                **{name: data[name][i] / max(1.0, data["examples"][i]) for name in self.per_example},
            })
        if self.rank == 0:
            with open(self.path, "a", encoding="utf-8") as out:
                for record in records:
                    out.write(json.dumps(record, sort_keys=True) + "\n")
            for sink in self.sinks:
                sink.write(records)
            last = records[-1]
            self.say(f"{self.stage} step {last['step']:,}/{self.total_steps:,} | loss {last['loss']:.4f} | "
                     f"z {last['z_loss']:.2e} | lr {last['lr']:.3g} | grad norm {last['grad_norm']:.3f} | "
                     f"{last['tokens_per_s']:,.0f} tok/s | MFU {last['mfu']:.1%} | masked {last['masked_share']:.1%}")
            self._warn_masked(sum(data["masked"]) / max(1.0, sum(data["instances"])), last["step"])
        return {"first_bad_step": first_bad, "stop": data["stop"][0] > 0, "last": records[-1]}

    def _warn_masked(self, share: float, step: int) -> None:
        """Once a run: more instances masked (repeated n-grams, section 3.1) than data.instance_filter_warn_share."""
        if share > self.masked_warn_share and not self.warned_masked:
            self.warned_masked = True
            self.say(f"warning: {self.stage} masked {share:.1%} of the instances of the steps up to {step:,} "
                     f"(repeated n-grams), more than data.instance_filter_warn_share {self.masked_warn_share:.1%}: "
                     "the data may hold much repeated text")
