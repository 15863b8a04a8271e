"""Shared helpers for the env / play tests: tiny untrained worlds and prompt images (no conftest: it is
shared by everyone)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def prompt_image(path: Path, seed: int = 0, size=(40, 50)) -> Path:
    """A random RGB PNG, deliberately not square nor world-sized (the World fits it)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def tiny_world(path: Path, image_size: int | None = None, prompts: bool = False) -> Path:
    """random_world("tiny"), or the tiny preset at another frame size (SB3 wants >= 36x36 images)."""
    from genie.world import random_world, save_world

    if image_size is None:
        random_world(path, "tiny")
    else:
        import torch

        from dynamics.lam import LatentActionModel
        from dynamics.model import DynamicsModel
        from genie.core.config import dynamics_preset, preset
        from tokenizer.model import VideoTokenizer

        torch.manual_seed(0)
        tok = VideoTokenizer(preset("tokenizer", "tiny", image_size=image_size))
        lam = LatentActionModel(preset("lam", "tiny", image_size=image_size))
        dyn = DynamicsModel(dynamics_preset("tiny", tok.cfg, lam.cfg))
        dyn.set_action_codes(lam.action_vectors())
        save_world(path, tok, dyn, lam)
    if prompts:
        (path / "prompts").mkdir()
        prompt_image(path / "prompts" / "start.png", seed=1)
    return Path(path)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core box: intra-op threads only contend (a 7 ms reset takes 600 ms with 2
    threads under load). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
