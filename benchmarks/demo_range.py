"""The demo's claim over seeds and threads: does mid-training lift held-out math in every run?

CPU training is not bit-identical across CPU models, so one run of `just demo` says little about
another machine's (on one AMD EPYC, AVX2, 1 and 2 threads per process gave bit-identical losses:
there the seed moved the result, not the threads). For each recipe seed and threads per process, this
builds specs/tiny.toml with `--set recipe.seed=S --set cluster.env.OMP_NUM_THREADS="T"` and one
anneal ingredient (seed 42), runs prepare (once), pretrain and the anneal with `launch/local.sh`,
evaluates the pretrained model and the ingredient as `olmo2spec demo-report` does, and prints one
row per run, then a `bench demo-range:` line with the ranges. Exit 1 if any run's held-out math
does not lift by at least --min-lift points.

    python3 benchmarks/demo_range.py --seeds 1234,1,2,3,4 --threads 1,2 --work .demo-range

Runs reuse finished checkpoints in --work (delete it to start over). `--set KEY=VALUE` passes
overrides to every build (recipe experiments); `--jobs 2` runs two configurations at once. One run
(pretrain + a 977-step anneal + two evals) took 10 minutes on 2 cores shared with other work, up to
22 when another run shared them too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "tiny.toml"
TASK = "demo-math-heldout"


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        status = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise SystemExit(f"bench demo-range: `{' '.join(cmd)}` exited {status}; see {log}")


def _build(work: Path, seed: int, threads: int, overrides: list[str]) -> Path:
    bundle = work / f"s{seed}-t{threads}" / "bundle"
    sets = [f"recipe.seed={seed}", f'cluster.env.OMP_NUM_THREADS="{threads}"', "stages.anneal.seeds=[42]",
            *overrides]
    cmd = [sys.executable, "-m", "olmo2spec", "build", str(SPEC), "-o", str(bundle)]
    for s in sets:
        cmd += ["--set", s]
    bundle.parent.mkdir(parents=True, exist_ok=True)
    _run(cmd, bundle.parent / "log.txt")
    return bundle


def _pct(row: dict[str, Any]) -> float:
    return float(row[TASK]["accuracy"]) * 100


def _drills(row: dict[str, Any]) -> str:
    d = row[TASK].get("by_kind", {}).get("drill")
    return f"{d['correct']}/{d['n']}" if d else "-"


def _one(work: Path, data: Path, seed: int, threads: int, overrides: list[str], nproc: int) -> dict[str, Any]:
    """Pretrain and one anneal ingredient for (seed, threads); evaluate both."""
    from olmo2spec.plan.plan import from_json
    from olmo2spec.runtime.demo_report import demo_rows

    bundle = _build(work, seed, threads, overrides)
    checkpoints = bundle.parent / "checkpoints"
    env = {**os.environ, "DATA_ROOT": str(data), "CHECKPOINT_ROOT": str(checkpoints)}
    start = time.perf_counter()
    _run(["bash", str(bundle / "launch" / "local.sh"), "pretrain", "anneal", "--nproc", str(nproc)],
         bundle.parent / "log.txt", env)
    train_s = time.perf_counter() - start
    plan = from_json((bundle / "plan.json").read_text(encoding="utf-8"))
    rows = {r["label"]: r for r in demo_rows(plan, checkpoints, data)}
    pre, post = rows["pretrained"], rows["ingredient (seed 42)"]
    return {"seed": seed, "threads": threads, "pre": _pct(pre), "post": _pct(post), "pre_drills": _drills(pre),
            "post_drills": _drills(post), "train_s": train_s, "total_s": time.perf_counter() - start}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1234,1,2,3,4", help="recipe seeds, comma-separated (1234: the recipe's)")
    ap.add_argument("--threads", default="1,2", help="threads per process (OMP_NUM_THREADS), comma-separated")
    ap.add_argument("--work", type=Path, default=ROOT / ".demo-range", help="bundles, checkpoints and data")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--nproc", type=int, default=2, help="processes per stage, as the demo runs (2)")
    ap.add_argument("--jobs", type=int, default=1, help="configurations run at once")
    ap.add_argument("--min-lift", type=float, default=10.0, help="points of held-out math every run must gain")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    work = args.work.resolve()
    data = work / "data"
    work.mkdir(parents=True, exist_ok=True)

    # The corpus and its token files once, shared by every configuration.
    if not (data / "MANIFEST.json").exists():
        _run([sys.executable, "-m", "olmo2spec", "demo-data", str(data)], work / "log.txt")
    first = _build(work, seeds[0], threads[0], args.overrides)
    _run(["bash", str(first / "launch" / "local.sh"), "prepare"], work / "log.txt",
         {**os.environ, "DATA_ROOT": str(data), "CHECKPOINT_ROOT": str(work / "prepare")})

    configs = [(s, t) for s in seeds for t in threads]
    print(f"{'seed':>6}  {'threads':>7}  {'held-out math %':>19}  {'held-out drills':>17}  {'time s':>6}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_one, work, data, s, t, args.overrides, args.nproc) for s, t in configs]
        results = []
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"{r['seed']:>6}  {r['threads']:>7}  {r['pre']:>8.1f} -> {r['post']:>5.1f}  "
                  f"{r['pre_drills']:>7} -> {r['post_drills']:>7}  {r['total_s']:>6.0f}", flush=True)

    pre = [r["pre"] for r in results]
    post = [r["post"] for r in results]
    lifted = sum(r["post"] - r["pre"] >= args.min_lift for r in results)
    print(f"bench demo-range: held-out math {min(pre):.1f}..{max(pre):.1f}% -> {min(post):.1f}..{max(post):.1f}% "
          f"over {len(results)} runs (seeds {args.seeds}, threads {args.threads}); "
          f"{lifted}/{len(results)} lifted by >= {args.min_lift:g} points; "
          f"pretrain + anneal {min(r['train_s'] for r in results):.0f}..{max(r['train_s'] for r in results):.0f} s")
    return 0 if lifted == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
