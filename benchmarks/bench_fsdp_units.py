"""One FSDP unit against one per block, at the tiny anneal's shape: 2 gloo processes, 4 sequences a step.

`fsdp_units = "auto"` plans one unit for the whole model on CPU: the step gathers the weights once
and reduce-scatters the gradients once, where per-block units (what GPUs get) take an all-gather per
block in forward and backward and a reduce-scatter per block. Each gloo collective costs a few ms
whatever its size, and on CPU nothing overlaps them with compute, so at micro-batch 2 they are a large
share of the step. This trains the tiny recipe's pretraining at batch 4 (micro-batch 2 per process,
as the demo's anneals) from the same seed both ways, alternating, and compares the median tokens/s of
the logged intervals after the first. The losses must be bit-identical: the units change how many
collectives a step takes, not what it computes.

    python3 benchmarks/bench_fsdp_units.py [--rounds 3] [--steps 120] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "tiny.toml"


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench fsdp-units: `{' '.join(cmd)}` exited {done.returncode}:\n{done.stdout}{done.stderr}")


def _train(work: Path, units: str, steps: int, round_: int) -> tuple[float, list[tuple[float, float]]]:
    bundle = work / f"bundle-{units}"
    if not bundle.exists():
        _run([sys.executable, "-m", "olmo2spec", "build", str(SPEC), "-o", str(bundle),
              "--set", "stages.pretrain.batch_size=4", "--set", "stages.pretrain.micro_batch=2",
              "--set", f"stages.pretrain.tokens={steps * 4 * 256}",
              "--set", "checkpoint.every_steps=100000", "--set", f'stages.pretrain.fsdp_units="{units}"'],
             dict(os.environ))
    checkpoints = work / f"ckpt-{units}-{round_}"
    checkpoints.mkdir()
    (checkpoints / "prepare").symlink_to(work / "prep" / "prepare")
    env = {**os.environ, "DATA_ROOT": str(work / "data"), "CHECKPOINT_ROOT": str(checkpoints), "OMP_NUM_THREADS": "1"}
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(bundle / "stages" / "02-pretrain.py")], env)
    rows = [json.loads(line) for line in (checkpoints / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    # one rate per logged interval (10 steps share one); the first holds warm-up
    rates = sorted({r["step"] // 10: r["tokens_per_s"] for r in rows if r["step"] > 10}.values())
    return statistics.median(rates), [(r["loss"], r["grad_norm"]) for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fsdp-units-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DATA_ROOT": str(work / "data"), "CHECKPOINT_ROOT": str(work / "prep")}
        if not (work / "data" / "MANIFEST.json").exists():
            _run([sys.executable, "-m", "olmo2spec", "demo-data", str(work / "data")], dict(os.environ))
        if not (work / "prep" / "prepare").exists():
            _run([sys.executable, "-m", "olmo2spec", "build", str(SPEC), "-o", str(work / "bundle-prep")], env)
            _run(["bash", str(work / "bundle-prep" / "launch" / "local.sh"), "prepare"], env)
        rates: dict[str, list[float]] = {"model": [], "block": []}
        losses: dict[str, list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for units in ("model", "block"):
                rate, losses[units] = _train(work, units, args.steps, round_)
                rates[units].append(rate)
                print(f"round {round_ + 1}: fsdp_units={units}: {rate:,.0f} tokens/s", flush=True)
        if losses["model"] != losses["block"]:
            print("bench fsdp-units: the two layouts trained to different losses", file=sys.stderr)
            return 1
        ours, base = statistics.median(rates["model"]), statistics.median(rates["block"])
        print(f"losses and grad norms of all {args.steps} steps identical; medians of {args.rounds} rounds")
        print(f"bench fsdp-units: ours={ours:,.0f} tokens/s baseline={base:,.0f} tokens/s ratio={ours / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
