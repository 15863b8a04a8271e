import os
import sys

from genie.cli.commands import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
