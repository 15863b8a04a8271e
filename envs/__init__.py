"""Gymnasium environments over a World: `Genie-v0` (one world) and its native batched vector env.

Importing this package registers `Genie-v0`; entry points are strings, so no model code loads until an
environment is made:

    gymnasium.make("Genie-v0", world="worlds/coinrun", prompt="frame.png")
    gymnasium.make_vec("Genie-v0", num_envs=256, vectorization_mode="vector_entry_point", world=...)
"""

ENV_ID = "Genie-v0"


def register_envs() -> None:
    """Register Genie-v0 with Gymnasium (idempotent: a second call, or genie's own, is a no-op)."""
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=ENV_ID,
            entry_point="envs.genie_env:GenieEnv",
            vector_entry_point="envs.vector_env:GenieVectorEnv",
        )


register_envs()
