"""Latency of one mix edit in the mix explorer on specs/13b.toml, against `olmo2spec check` as a process.

Ours: a source's number box set from Python, as a click sets it; the widget re-checks the recipe
in-process with the edit's `--set` overrides (its files' composition kept in a `ComposeCache`, each
file re-read and compared) and redraws the table, chart, stages and diagnostics before the
assignment returns. Each edit changes the value, so nothing is skipped. Also shown: the re-check
with the files composed anew, as without the cache. Baseline:
`python -m olmo2spec check specs/13b.toml` as a fresh process (what a shell loop over edits costs).
Alternating, so machine noise hits both alike; medians. ratio = baseline / ours (> 1: ours faster).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 15
GOAL_MS = 100


def check_process() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "olmo2spec", "check", "specs/13b.toml"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    from olmo2spec.notebook.mix_edit import recheck
    from olmo2spec.notebook.mixes import MixExplorer
    from olmo2spec.spec.compose import ComposeCache

    explorer = MixExplorer(ROOT / "specs" / "13b.toml", "dolmino-100b")
    box = explorer.rows["dolmino-flan"].box

    def edit(i: int) -> float:
        start = time.perf_counter()
        box.value = 90.0 + i % 2  # 90, 91, 90, ...: every assignment is a change
        elapsed = time.perf_counter() - start
        assert explorer.outcome is not None and explorer.outcome.ok
        return elapsed

    edit(1)
    check_process()  # warm the file cache and bytecode
    ours, compiler, base = [], [], []
    for i in range(ROUNDS):
        ours.append(edit(i))
        assert explorer.edit is not None
        start = time.perf_counter()
        recheck(explorer.edit, ComposeCache())  # as the first edit of a recipe: its files read and composed
        compiler.append(time.perf_counter() - start)
        base.append(check_process())
    o, c, b = (statistics.median(x) * 1000 for x in (ours, compiler, base))
    print(f"one mix edit in the explorer (re-check + redraw): median {o:.1f} ms over {ROUNDS} (goal < {GOAL_MS} ms)")
    print(f"the re-check alone, files composed anew:          median {c:.1f} ms (what the cache saves)")
    print(f"olmo2spec check specs/13b.toml as a process:      median {b:.1f} ms")
    print(f"bench notebook: ours={o:.1f} ms baseline={b:.1f} ms ratio={b / o:.2f}")


if __name__ == "__main__":
    main()
