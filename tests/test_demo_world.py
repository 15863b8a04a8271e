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


def _rollout(world, action: int, seed: int, steps: int = 4) -> np.ndarray:
    world.reset(DEMO_WORLD / "prompts" / world.info["prompts"][0])
    g = torch.Generator().manual_seed(seed)
    return np.stack([world.step([action], generator=g)[0].numpy() for _ in range(steps)])


def test_demo_world_fits_the_size_budget_and_ships_prompts_and_its_card():
    size = sum(f.stat().st_size for f in DEMO_WORLD.rglob("*") if f.is_file())
    assert size <= 12 * 1024 * 1024, size
    info = json.loads((DEMO_WORLD / "world.json").read_text())
    assert info["prompts"] and all((DEMO_WORLD / "prompts" / p).exists() for p in info["prompts"])
    assert (DEMO_WORLD.parents[2] / "docs" / "DEMO_WORLD.md").exists()


def test_same_action_and_seed_give_the_same_frames(world):
    a, b = _rollout(world, 1, seed=7), _rollout(world, 1, seed=7)
    np.testing.assert_array_equal(a, b)


def test_different_latent_actions_give_measurably_different_frames(world):
    """Every latent action the world maps to a real game action moves the picture its own way: the mean
    absolute pixel difference between rollouts of two such actions from one prompt and seed is clearly
    above zero for some pair, and rollouts are not all the same."""
    used = sorted(set(world.info["action_mapping"]["latent_for_real"]))
    assert len(used) >= 2, used  # the LAM did not collapse: real actions map to different latent ones
    rollouts = {a: _rollout(world, a, seed=0).astype(np.int16) for a in used}
    diffs = [np.abs(rollouts[a] - rollouts[b]).mean() for i, a in enumerate(used) for b in used[i + 1 :]]
    assert max(diffs) > 0.5, diffs  # mean |difference| in 0..255 pixel units


def test_genie_v0_uses_the_demo_world_by_default():
    env = gym.make("Genie-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    obs2, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs2.shape == obs.shape and isinstance(reward, float)
    env.close()
