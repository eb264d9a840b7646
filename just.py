"""`python3 -m just RECIPE`: run this repository's justfile with the `just` that rust-just installed
for this Python, whether or not its scripts directory is on PATH.

pip puts console scripts where PATH may not see them: pyenv before 2.6.8 needs a `pyenv rehash`
after `python3 -m pip install`, and `pip install --user` writes to ~/.local/bin. The recipes get this
interpreter as `python`, so every command they run is `<this python> -m ...`, never a console script.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig


def _candidates() -> list[str]:
    """Where pip installs scripts for this interpreter (the default and the user scheme), then PATH."""
    schemes = [sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")]
    found = [os.path.join(sysconfig.get_path("scripts", scheme), "just") for scheme in schemes]
    on_path = shutil.which("just")
    return [*found, on_path] if on_path else found


def main() -> int:
    just = next((c for c in _candidates() if os.path.isfile(c) and os.access(c, os.X_OK)), None)
    if just is None:
        print(f"just: rust-just is not installed for {sys.executable}\n"
              f"  hint: {sys.executable} -m pip install rust-just", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    args = [just, "--justfile", os.path.join(here, "justfile"), "--working-directory", here,
            "--set", "python", sys.executable, *sys.argv[1:]]
    os.execv(just, args)


if __name__ == "__main__":
    sys.exit(main())
