"""Stepping speed of a world; the same as `genie bench` (see genie/cli/bench.py for what is measured)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genie.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
