"""Soup of 4 checkpoints of a ~220M-parameter model: peak memory and time, streamed against naive.

Writes 4 ingredient checkpoints (model and AdamW state, as training runs save them: ~2.7 GB each)
to a temporary directory, then soups them twice, each in a fresh process that reports its own
peak RSS (ru_maxrss) and wall time:
  ours      olmo2spec.runtime.soup.soup: one fp32 model accumulator, one tensor of one ingredient read at a time
  baseline  every ingredient loaded whole with load_model_weights, then averaged and saved
Both write the soup as a DCP checkpoint; their results are compared. Ours must peak below 2.5
times one ingredient's weights (exit 1 otherwise). Needs ~13 GB of disk (--tmp) and ~7 GB of RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

MAX_RATIO = 2.5


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _vm_hwm_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child(mode: str, out: Path, paths: list[Path]) -> None:
    """One soup in this (fresh) process; prints a JSON line with its time and peak memory."""
    warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
    import torch
    import torch.distributed.checkpoint as dcp

    from olmo2spec.runtime.checkpoint import load_model_weights
    from olmo2spec.runtime.soup import soup

    after_imports = _peak_mib()
    weights = [1 / len(paths)] * len(paths)
    start = time.perf_counter()
    if mode == "ours":
        soup(paths, weights, out, meta={"bench": True})
    else:
        with torch.no_grad():
            models = [load_model_weights(p) for p in paths]
            avg = {k: sum(w * m[k] for m, w in zip(models, weights, strict=True)) for k in models[0]}
            out.mkdir(parents=True)
            dcp.save({"model": avg}, checkpoint_id=str(out), no_dist=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mib": _peak_mib(), "vm_hwm_mib": _vm_hwm_mib(),
                      "after_imports_mib": after_imports}), flush=True)


def write_ingredients(root: Path, args: argparse.Namespace) -> tuple[list[Path], int, int]:
    """`args.ingredients` final checkpoints of one model, perturbed differently; (paths, weight bytes, dir bytes)."""
    import torch

    from olmo2spec.runtime.checkpoint import Checkpointer
    from olmo2spec.runtime.model import ModelArgs, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelArgs(d_model=args.d_model, n_layers=args.layers, n_heads=args.d_model // 64,
                                  n_kv_heads=args.d_model // 64, mlp_hidden=args.mlp, vocab_rows=args.vocab_rows,
                                  max_seq_len=2048))
    model.init_weights()
    optimizer = torch.optim.AdamW(model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    paths = []
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for i in range(args.ingredients):
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.01)
            run = root / f"anneal-seed{i}"
            paths.append(Checkpointer(run, keep_last=1, permanent_every=0).save(100, model, optimizer, {},
                                                                               final=True))
    dir_bytes = sum(f.stat().st_size for f in paths[0].iterdir())
    return paths, weight_bytes, dir_bytes


def run_child(mode: str, out: Path, paths: list[Path]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), *map(str, paths)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{mode} soup failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--mlp", type=int, default=2816)
    parser.add_argument("--vocab-rows", type=int, default=32768)
    parser.add_argument("--ingredients", type=int, default=4)
    parser.add_argument("--tmp", type=Path, default=None, help="where the checkpoints go (default: $TMPDIR)")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.paths)
        return

    root = Path(tempfile.mkdtemp(prefix="bench-soup-", dir=args.tmp))
    try:
        start = time.perf_counter()
        paths, weight_bytes, dir_bytes = write_ingredients(root, args)
        mib = weight_bytes / 2**20
        print(f"{args.ingredients} ingredients: {weight_bytes // 4 / 1e6:,.1f}M parameters, {mib:,.0f} MiB of fp32 "
              f"weights each ({dir_bytes / 2**20:,.0f} MiB with optimizer state), written in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        ours = run_child("ours", root / "ours" / "step-0000000", paths)
        base = run_child("baseline", root / "baseline" / "step-0000000", paths)
        for name, r in (("ours", ours), ("baseline", base)):
            print(f"{name:<9} {r['seconds']:6.1f} s  peak RSS {r['peak_mib']:7,.0f} MiB (VmHWM {r['vm_hwm_mib']:,.0f}; "
                  f"{r['after_imports_mib']:,.0f} after imports) = {r['peak_mib'] / mib:.2f} x one ingredient's "
                  f"weights", flush=True)

        import torch

        from olmo2spec.runtime.checkpoint import load_model_weights

        a, b = load_model_weights(root / "ours" / "step-0000000"), load_model_weights(root / "baseline" / "step-0000000")
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        same_keys = a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].dtype == torch.float32 for k in a)
        print(f"ours vs baseline: same keys and shapes {same_keys}, max |difference| {diff:.2g}")
        ratio = ours["peak_mib"] / mib
        print(f"bench soup: ours={ours['peak_mib']:.0f} MiB baseline={base['peak_mib']:.0f} MiB "
              f"ratio={base['peak_mib'] / ours['peak_mib']:.2f}")
        if ratio >= MAX_RATIO or not same_keys or diff > 1e-6:
            sys.exit(f"FAIL: ours peaks at {ratio:.2f} x one ingredient (limit {MAX_RATIO}) or differs from baseline")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
