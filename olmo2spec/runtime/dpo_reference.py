"""The reference model's log-probs of a DPO run's pairs, cached on disk in the run directory.

They are computed once, before training, from the `from` checkpoint, and depend only on what the
key holds: that checkpoint's COMPLETE marker (which lists its files' checksums), the dataset file's
sha256 and how many pairs are read, the loss type (summed or length-normalised), the length the
sequences are cut to, the tokenizer and the chat template. A restart with the same key reuses
them; a change to any of those computes them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from olmo2spec.runtime.checkpoint import COMPLETE
from olmo2spec.runtime.checkpoint.integrity import sha256_file

__all__ = ["reference_key", "load_reference", "save_reference"]

PREFIX = "reference-logps-"


def reference_key(*, start: Path, dataset: Path, examples: int, loss: str, max_seq_len: int, tokenizer: str,
                  template: str) -> dict[str, Any]:
    return {"from": str(start.name), "from_marker_sha256": sha256_file(start / COMPLETE),
            "dataset_sha256": sha256_file(dataset), "examples": examples, "loss": loss,
            "max_seq_len": max_seq_len, "tokenizer": tokenizer, "template": template}


def _path(run_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return run_dir / f"{PREFIX}{digest}.npz"


def load_reference(run_dir: Path, key: dict[str, Any], pairs: int) -> tuple[np.ndarray, Path] | None:
    """(pairs, 2) chosen and rejected log-probs cached under `key`, or None (none, another key, unreadable)."""
    path = _path(run_dir, key)
    try:
        with np.load(path) as cached:
            if json.loads(str(cached["key"])) != key or cached["logps"].shape != (pairs, 2):
                return None
            return np.asarray(cached["logps"], dtype=np.float64), path
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, torn or foreign
        return None


def save_reference(run_dir: Path, key: dict[str, Any], logps: np.ndarray) -> Path:
    """Write atomically (a killed run leaves no half-written cache); caches of other keys go."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = _path(run_dir, key)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        np.savez(out, key=np.array(json.dumps(key, sort_keys=True)), logps=logps)
    os.replace(partial, path)
    for stale in run_dir.glob(f"{PREFIX}*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path
