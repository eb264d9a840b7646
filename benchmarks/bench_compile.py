"""Wall time of `olmo2spec check specs/13b.toml`, against `python -c pass` in the same run.

Both are timed as fresh processes, alternating, so machine noise hits them alike; medians.
The last line has the form every benchmark ends with; ratio = baseline / ours (> 1: ours faster).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 15


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ours_cmd = [sys.executable, "-m", "olmo2spec.cli", "check", "specs/13b.toml"]
    base_cmd = [sys.executable, "-c", "pass"]
    wall(ours_cmd)  # warm the file cache and bytecode
    ours, base = [], []
    for _ in range(ROUNDS):
        ours.append(wall(ours_cmd))
        base.append(wall(base_cmd))
    o, b = statistics.median(ours), statistics.median(base)
    print(f"olmo2spec check specs/13b.toml: median {o:.3f} s over {ROUNDS} runs (goal < 0.5 s)")
    print(f"python -c pass:                 median {b:.3f} s")
    print(f"bench compile: ours={o:.3f} s baseline={b:.3f} s ratio={b / o:.3f}")


if __name__ == "__main__":
    main()
