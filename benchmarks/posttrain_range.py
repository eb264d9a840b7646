"""The demo's post-training claims over seeds and threads: does each stage raise what it is for, every run?

`just demo` reports one run of SFT -> DPO -> RLVR from the soup. CPU training is not bit-identical
across CPUs and thread counts, and some of the lifts are a few held-out items, so one run says little.
For each post-training seed and threads per process, this builds specs/tiny.toml with
`--set stages.{sft,dpo,rlvr}.seed=S --set cluster.env.OMP_NUM_THREADS="T"`, copies a finished soup
from --base (a `just demo` checkpoint root), runs `launch/local.sh sft dpo rlvr`, evaluates the soup
and the three models as `olmo2spec demo-report` does, and prints one row per run, then a
`bench posttrain-range:` line with the ranges. Exit 1 if any run's stage fails to raise its number.

    python3 benchmarks/posttrain_range.py --base .demo/checkpoints --data .demo/data --seeds 1234,1 --threads 1,2

Runs reuse finished checkpoints in --work (delete it to start over). Seed 1234 with 1 thread is the
demo's own configuration: its row must equal the demo's table. One run (sft, dpo, rlvr and four
evaluations) takes 6-7 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "tiny.toml"
STAGES = ("sft", "dpo", "rlvr")
# (stage, its start, task, number, column): what each stage should raise over its start (demo_report's _EFFECTS)
EFFECTS = (("sft", "soup", "chat", "format", "chat ok"), ("dpo", "sft", "preferences", "accuracy", "pref acc"),
           ("rlvr", "dpo", "math", "reward", "rl reward"), ("rlvr", "dpo", "math", "exact", "rl exact"))


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        status = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise SystemExit(f"bench posttrain-range: `{' '.join(cmd)}` exited {status}; see {log}")


def _one(work: Path, base: Path, data: Path, seed: int, threads: int, nproc: int) -> dict[str, Any]:
    from olmo2spec.plan.plan import from_json
    from olmo2spec.runtime.demo_report import demo_rows

    folder = work / f"s{seed}-t{threads}"
    bundle, checkpoints, log = folder / "bundle", folder / "checkpoints", folder / "log.txt"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "olmo2spec", "build", str(SPEC), "-o", str(bundle),
           "--set", f'cluster.env.OMP_NUM_THREADS="{threads}"']
    for stage in STAGES:
        cmd += ["--set", f"stages.{stage}.seed={seed}"]
    _run(cmd, log)
    if not (checkpoints / "soup").exists():
        shutil.copytree(base / "soup", checkpoints / "soup", ignore=shutil.ignore_patterns("demo-*.json"))
    env = {**os.environ, "DATA_ROOT": str(data), "CHECKPOINT_ROOT": str(checkpoints)}
    start = time.perf_counter()
    _run(["bash", str(bundle / "launch" / "local.sh"), *STAGES, "--nproc", str(nproc)], log, env)
    train_s = time.perf_counter() - start
    plan = from_json((bundle / "plan.json").read_text(encoding="utf-8"))
    rows = {r["run"]: r for r in demo_rows(plan, checkpoints, data)}
    numbers = {run: rows[run]["instruct"] for run in ("soup", *STAGES)}
    return {"seed": seed, "threads": threads, "numbers": numbers, "train_s": train_s,
            "total_s": time.perf_counter() - start}


def _pct(r: dict[str, Any], run: str, task: str, number: str) -> float:
    return 100 * float(r["numbers"][run][task][number])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=ROOT / ".demo" / "checkpoints",
                    help="a checkpoint root with a finished soup (`just demo`'s)")
    ap.add_argument("--data", type=Path, default=ROOT / ".demo" / "data", help="the demo corpus")
    ap.add_argument("--seeds", default="1234,1", help="post-training seeds, comma-separated (1234: the recipe's)")
    ap.add_argument("--threads", default="1,2", help="threads per process (OMP_NUM_THREADS), comma-separated")
    ap.add_argument("--work", type=Path, default=ROOT / ".posttrain-range", help="bundles and checkpoints")
    ap.add_argument("--nproc", type=int, default=2, help="processes per stage, as the demo runs (2)")
    args = ap.parse_args()
    base, data, work = args.base.resolve(), args.data.resolve(), args.work.resolve()
    if not (base / "soup").is_dir():
        raise SystemExit(f"bench posttrain-range: no soup under {base}: run `just demo` first (or pass --base)")
    work.mkdir(parents=True, exist_ok=True)

    header = "  ".join(f"{column + ' %':>19}" for *_, column in EFFECTS)
    print(f"{'seed':>6}  {'threads':>7}  {header}  {'time s':>6}", flush=True)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for threads in (int(t) for t in args.threads.split(",")):
            r = _one(work, base, data, seed, threads, args.nproc)
            results.append(r)
            cells = "  ".join(f"{_pct(r, start, task, number):>8.1f} -> {_pct(r, stage, task, number):>5.1f}"
                              for stage, start, task, number, _ in EFFECTS)
            print(f"{seed:>6}  {threads:>7}  {cells}  {r['total_s']:>6.0f}", flush=True)

    parts, every = [], True
    for stage, start, task, number, column in EFFECTS:
        before = [_pct(r, start, task, number) for r in results]
        after = [_pct(r, stage, task, number) for r in results]
        raised = sum(a > b for a, b in zip(after, before, strict=True))
        every &= raised == len(results)
        parts.append(f"{column} {min(before):.1f}..{max(before):.1f}% -> {min(after):.1f}..{max(after):.1f}% "
                     f"({stage} raised {raised}/{len(results)})")
    print(f"bench posttrain-range: {'; '.join(parts)}; over {len(results)} runs (seeds {args.seeds}, threads "
          f"{args.threads}); sft+dpo+rlvr {min(r['train_s'] for r in results):.0f}.."
          f"{max(r['train_s'] for r in results):.0f} s")
    return 0 if every else 1


if __name__ == "__main__":
    sys.exit(main())
