"""A small metrics.jsonl as the trainer writes it: a slowly falling loss with one loss spike and one gradient spike."""

from __future__ import annotations

import json
import math
from pathlib import Path

LOSS_SPIKE_STEP = 40
GRAD_SPIKE_STEP = 45


def record(step: int) -> dict[str, float]:
    wobble = 0.02 * math.sin(step * 1.7)
    loss = 3.5 - 0.01 * step + wobble + (3.0 if step == LOSS_SPIKE_STEP else 0.0)
    grad_norm = 1.0 + wobble + (8.0 if step == GRAD_SPIKE_STEP else 0.0)
    return {"step": step, "tokens": 4096 * step, "lr": 3e-3 * min(1.0, step / 20), "loss": loss,
            "z_loss": 1e-4 * loss, "grad_norm": grad_norm, "tokens_per_s": 5000.0 + 10 * step, "mfu": 0.0,
            "masked_share": 0.0, "loss_spike_score": 0.0, "grad_spike_score": 0.0}


def write_metrics(run_dir: Path, steps: range) -> Path:
    """Append the records of `steps` to run_dir/metrics.jsonl, one JSON object a line (the trainer's format)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    with open(path, "a", encoding="utf-8") as out:
        for step in steps:
            out.write(json.dumps(record(step), sort_keys=True) + "\n")
    return path
