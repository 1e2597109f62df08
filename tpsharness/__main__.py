"""python -m tpsharness: see tpsharness.cli."""

import sys

from .cli import main

sys.exit(main())
