"""Soup of 4 checkpoints of a 170M-parameter model: peak memory and time, streamed against naive.

Writes 4 ingredient checkpoints (d_model 1024, 8 layers, MLP 2816, 32,768 rows: 650 MiB of fp32
weights, ~2 GB with their AdamW state, saved by Checkpointer as training runs save them) to a
temporary directory, then soups them twice, each in a fresh process that reports its own peak
RSS (VmHWM) and wall time:
  ours      olmo2spec.runtime.soup.soup: one model accumulator, one tensor of one ingredient read at a time
  baseline  every ingredient loaded whole with load_model_weights, then averaged and saved
Both write the soup as a DCP checkpoint; their results are compared. Ours must peak below 2.5
times one ingredient's weights (exit 1 otherwise). Needs ~9 GB of disk (--tmp) and ~5 GB of RAM;
about 2 minutes on 2 cores, most of it writing the ingredients.
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
    """Peak RSS of this process: VmHWM. (Not ru_maxrss: after fork and exec it keeps the parent's peak,
    here the ~3 GiB of the model and optimizer that wrote the ingredients.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, out: Path, paths: list[Path]) -> None:
    """One soup in this (fresh) process; prints a JSON line with its time and peak memory."""
    warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
    import torch
    import torch.distributed.checkpoint as dcp

    from olmo2spec.runtime.checkpoint import checksums_of, load_model_weights, rank_files, seal
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
            seal(out, checksums_of(out, rank_files(out, 0)), {"step": 0, "final": True})  # complete, as ours is
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mib": _peak_mib(), "after_imports_mib": after_imports}), flush=True)


def write_ingredients(root: Path, args: argparse.Namespace) -> tuple[list[Path], int, int]:
    """`args.ingredients` final checkpoints of one model, perturbed differently; (paths, weight bytes, dir bytes).

    Saved by `Checkpointer.save` (model and AdamW state). The model keeps PyTorch's default
    initialisation and the AdamW state is zeros set directly: `init_weights()` and an optimizer
    step take longer here than the saves, and neither changes what is written.
    """
    import torch

    from olmo2spec.runtime.checkpoint import Checkpointer
    from olmo2spec.runtime.model import ModelArgs, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelArgs(d_model=args.d_model, n_layers=args.layers, n_heads=args.d_model // 64,
                                  n_kv_heads=args.d_model // 64, mlp_hidden=args.mlp, vocab_rows=args.vocab_rows,
                                  max_seq_len=2048))
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():  # what AdamW's first step creates
        optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                              "exp_avg_sq": torch.zeros_like(p)}
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
    parser.add_argument("--layers", type=int, default=8)
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
            print(f"{name:<9} {r['seconds']:6.1f} s  peak RSS {r['peak_mib']:7,.0f} MiB = {r['peak_mib'] / mib:.2f} x "
                  f"one ingredient's weights ({r['after_imports_mib']:,.0f} MiB of it after imports)", flush=True)

        import torch

        from olmo2spec.runtime.checkpoint import load_model_weights

        a = load_model_weights(root / "ours" / "step-0000000")
        b = load_model_weights(root / "baseline" / "step-0000000")
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
