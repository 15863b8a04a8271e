"""Gymnasium environments over a World: `Genie-v0` (one world) and its native batched vector env.

Importing this package registers `Genie-v0`; entry points are strings, so no model code loads until an
environment is made:

    gymnasium.make("Genie-v0", world="worlds/coinrun", prompt="frame.png")
    gymnasium.make_vec("Genie-v0", num_envs=256, vectorization_mode="vector_entry_point", world=...)
"""

from genie import register_envs  # the one registration (entry points are strings)

ENV_ID = "Genie-v0"

__all__ = ["ENV_ID", "register_envs"]

register_envs()
