"""`genie play`: the same flags and behaviour as `python play.py` (see play.py).

play.py is the top-level module of the user-facing layer; it is imported here at load (it imports only
the standard library until play starts), so a genie without it simply has no `play` command.
"""

import play


def add_cli(subparsers) -> None:
    """Register `genie play`; func(args) -> exit code."""
    p = subparsers.add_parser(
        "play",
        help="play a world in a pygame window (keys pick latent actions)",
        description=play.__doc__.split("\n\n")[0],
    )
    play.add_arguments(p)
    p.set_defaults(func=play.run)
