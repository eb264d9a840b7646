"""Every notebook in notebooks/ runs headless (nbclient, a real kernel) against small fixtures, without errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from metrics_fixture import write_metrics

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def notebook_env(checkpoints: Path) -> dict[str, str]:
    """What `just lab` gives a kernel, pointed at fixtures: runs under `checkpoints`, the tiny bundle's plan."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "CHECKPOINT_ROOT": str(checkpoints),
            "OLMO2SPEC_BUNDLE": str(ROOT / "generated" / "tiny"), "DATA_ROOT": str(checkpoints.parent / "data")}


def fixture_runs(root: Path) -> Path:
    """A checkpoint root with a pretraining run and an anneal run, each with a short metrics.jsonl."""
    write_metrics(root / "pretrain", range(1, 61))
    write_metrics(root / "anneal-seed42", range(1, 21))
    return root


def test_every_notebook_is_found() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"mixes.ipynb", "microanneals.ipynb", "runs.ipynb", "soups.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs_headless_and_shows_its_widget(path: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in notebook_env(fixture_runs(tmp_path / "checkpoints")).items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error" or out.get("name") == "stderr"]
    assert any(WIDGET in out.get("data", {}) for out in outputs), "the notebook shows no widget"
