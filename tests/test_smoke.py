from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, SHIPPED_SPECS


def test_check_passes_on_every_shipped_spec():
    specs = [f"specs/{name}.toml" for name in SHIPPED_SPECS]
    result = subprocess.run([sys.executable, "-m", "olmo2spec.cli", "check", *specs], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(SHIPPED_SPECS)
