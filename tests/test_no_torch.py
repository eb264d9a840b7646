"""The compiler path never imports torch: checking a recipe must work on a laptop, fast."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

PROGRAM = """
import io, sys, contextlib
from olmo2spec.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["check", "specs/13b.toml", "specs/tiny.toml"]) == 0
    assert main(["explain", "specs/32b.toml"]) == 0
    assert main(["explain", "--json", "specs/7b.toml"]) == 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "numpy", "jinja2", "transformers"})
print(",".join(heavy))
"""


def test_compiler_path_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
