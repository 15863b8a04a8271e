"""The shipped demo world (genie/assets/demo_world): it loads, steps, and its actions control it."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.genie_env import DEMO_WORLD
from genie.world import World


@pytest.fixture(scope="module")
def world():
    return World.load(DEMO_WORLD, device="cpu")


def _rollout(world, action: int, seed: int, steps: int = 8, prompt: int = 0) -> np.ndarray:
    world.reset(DEMO_WORLD / "prompts" / world.info["prompts"][prompt])
    g = torch.Generator().manual_seed(seed)
    return np.stack([world.step([action], generator=g)[0].numpy() for _ in range(steps)])


def _paddle_x(frame: np.ndarray) -> float:
    """Mean column of the bright pixels in Breakout's paddle rows, inside the walls (64x64 frames)."""
    cols = np.nonzero((frame[54:62, 4:60].astype(int).sum(-1) > 150).any(0))[0] + 4
    return float(cols.mean()) if len(cols) else float("nan")


def test_demo_world_fits_the_size_budget_and_ships_prompts_and_its_card():
    size = sum(f.stat().st_size for f in DEMO_WORLD.rglob("*") if f.is_file())
    assert size <= 12 * 1024 * 1024, size
    info = json.loads((DEMO_WORLD / "world.json").read_text())
    assert info["prompts"] and all((DEMO_WORLD / "prompts" / p).exists() for p in info["prompts"])
    assert (DEMO_WORLD.parents[3] / "docs" / "DEMO_WORLD.md").exists()
    shipped = sum(f.stat().st_size for f in DEMO_WORLD.parent.rglob("*") if f.is_file())
    assert shipped <= 25 * 1024 * 1024, shipped  # every shipped world together


def test_demo_world_carries_checksums_of_every_file():
    """A shipped world is verified on load like any other: world.json lists each model's config and each
    prompt, and each config lists its weights (a corrupt install is one sentence, not black frames)."""
    from genie.world.folder import read_world

    info = json.loads((DEMO_WORLD / "world.json").read_text())
    assert set(info["parts"]) >= {"tokenizer", "dynamics", "prompts"}
    assert set(info["parts"]["prompts"]) == set(info["prompts"])
    for part in ("tokenizer", "dynamics"):
        assert "model.safetensors" in json.loads((DEMO_WORLD / part / "config.json").read_text())["files"]
    assert not (DEMO_WORLD / ".lock").exists()
    read_world(DEMO_WORLD)


def test_same_action_and_seed_give_the_same_frames(world):
    a, b = _rollout(world, 2, seed=7, steps=4), _rollout(world, 2, seed=7, steps=4)
    np.testing.assert_array_equal(a, b)


def test_keys_control_the_paddle(world):
    """Controllability on the thing Breakout's actions move: from every shipped prompt, 8 frames of RIGHT
    leave the paddle more than 10 px right of where 8 frames of LEFT leave it."""
    names = world.info["action_mapping"]["real_action_names"]
    to_latent = world.info["action_mapping"]["latent_for_real"]
    right, left = to_latent[names.index("RIGHT")], to_latent[names.index("LEFT")]
    for prompt in range(len(world.info["prompts"])):
        a, b = _rollout(world, right, seed=0, prompt=prompt), _rollout(world, left, seed=0, prompt=prompt)
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() > 0.1, prompt
        assert _paddle_x(a[-1]) > _paddle_x(b[-1]) + 10, (prompt, _paddle_x(a[-1]), _paddle_x(b[-1]))


def test_genie_v0_uses_the_demo_world_by_default():
    env = gym.make("Genie-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    obs2, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs2.shape == obs.shape and isinstance(reward, float)
    env.close()
