"""Play a genie world in a pygame window: `python play.py --prompt frame.png` (the same as `genie play`).

Keys 1..|A| pick latent actions; R resets, P pauses, S saves a screenshot, Esc quits. `--help` lists the
flags; the game loop lives in genie/cli/play.py.
"""

import sys

from genie.cli.play import main

if __name__ == "__main__":
    sys.exit(main())
