"""PPO in imagination: it learns when the reward is easy (the CLI path is in test_end_to_end.py)."""

import numpy as np
import torch

from envs.vector_env import GenieVectorEnv
from genie.rl import ppo
from genie.world import World, random_world


def test_ppo_return_improves_on_an_easy_reward(tmp_path):
    """The world pays 1.0 for latent action 3 (a stand-in reward model): PPO must learn to take it."""
    world = World.load(random_world(tmp_path / "w", "tiny"))
    world.maskgit_steps = 1  # speed: the frames matter little here

    def easy_reward(transitions, actions):  # a stand-in reward model through the public hook
        return (actions == 3).float(), torch.zeros(len(actions), dtype=torch.bool)

    world.set_reward_fn(easy_reward)
    envs = GenieVectorEnv(
        num_envs=8, world=world, prompt=np.zeros((32, 32, 3), np.uint8), max_episode_steps=8
    )
    args = ppo.Args(total_steps=8 * 16 * 12, num_envs=8, num_steps=16, lr=3e-3, update_epochs=4, seed=0)
    summary = ppo.train(envs, args, out=tmp_path / "run", progress=False)
    # Random play earns 8 steps x 1/8 = 1.0 per episode; a learned policy approaches 8.
    assert summary["first_return"] < 2.5 and summary["last_return"] > 4.0, summary
    agent, meta = ppo.load_policy(tmp_path / "run")
    assert meta["num_actions"] == 8 and isinstance(agent, ppo.Agent)
