"""`python3 -m olmo2spec`: the CLI without its console script, which PATH may not list (pyenv, --user)."""

import sys

from olmo2spec.cli import main

sys.exit(main())
