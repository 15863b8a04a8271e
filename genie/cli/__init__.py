"""genie.cli: the `genie` command, its benchmark, and the pygame game loop behind `play.py`."""

from genie.cli.commands import main

__all__ = ["main"]
