import sys

from olmo2spec.runtime.main import main

sys.exit(main())
