"""genie: a Genie-style interactive world model.

A prompt image becomes a playable world: a video tokenizer (ST-ViViT VQ-VAE), a latent action model
that learns |A| actions from unlabelled video, and a MaskGIT dynamics transformer that imagines the next
frame. `import genie` registers the Gymnasium environment `Genie-v0` (entry points are strings, so this
imports no model code).
"""

__version__ = "0.1.0"


def register_envs() -> None:
    """Register Genie-v0 (idempotent). Without gymnasium installed there is nothing to register, and the
    models and World still import (e.g. a GPU box that only benchmarks them)."""
    try:
        import gymnasium
    except ImportError:
        return

    if "Genie-v0" not in gymnasium.registry:
        gymnasium.register(
            id="Genie-v0",
            entry_point="envs.genie_env:GenieEnv",
            vector_entry_point="envs.vector_env:GenieVectorEnv",
        )


register_envs()
