"""PPO in imagination: it learns when the reward is easy, and respects NEXT_STEP autoreset."""

import numpy as np
import torch

from envs.vector_env import GenieVectorEnv
from genie import ppo
from genie.world import World, random_world


def test_ppo_return_improves_on_an_easy_reward(tmp_path):
    """The world pays 1.0 for latent action 3 (a stand-in reward model): PPO must learn to take it."""
    world = World.load(random_world(tmp_path / "w", "tiny"))
    world.maskgit_steps = 1  # speed: the frames matter little here

    def easy_reward():
        if world._transition is None or not hasattr(world, "_last_actions"):
            return torch.zeros(world.batch_size), torch.zeros(world.batch_size, dtype=torch.bool)
        return (world._last_actions == 3).float(), torch.zeros(world.batch_size, dtype=torch.bool)

    step = world.step

    def step_and_remember(actions, *args, **kw):
        world._last_actions = world.check_actions(actions)
        return step(actions, *args, **kw)

    world.step, world.predict_reward_done = step_and_remember, easy_reward
    envs = GenieVectorEnv(
        num_envs=8, world=world, prompt=np.zeros((32, 32, 3), np.uint8), max_episode_steps=8
    )
    args = ppo.Args(total_steps=8 * 16 * 12, num_envs=8, num_steps=16, lr=3e-3, update_epochs=4, seed=0)
    summary = ppo.train(envs, args, out=tmp_path / "run", progress=False)
    # Random play earns 8 steps x 1/8 = 1.0 per episode; a learned policy approaches 8.
    assert summary["first_return"] < 2.5 and summary["last_return"] > 4.0, summary
    agent, meta = ppo.load_policy(tmp_path / "run")
    assert meta["num_actions"] == 8 and isinstance(agent, ppo.Agent)


def test_rl_train_and_real_game_eval_through_the_cli(tmp_path):
    """`genie rl train` on a world that records its game and action mapping, then `genie rl eval` plays the
    policy and a random one in the real game and prints the JSON keys the docs promise."""
    import json
    import subprocess
    import sys

    from PIL import Image

    world_dir = random_world(tmp_path / "w", "tiny")
    info = json.loads((world_dir / "world.json").read_text())
    info.update(
        env_id="ALE/Breakout-v5",
        fit="stretch",
        action_mapping={
            "real_action_names": ["NOOP", "FIRE", "RIGHT", "LEFT"],
            "latent_for_real": [0, 1, 2, 3],
            "real_for_latent": [0, 1, 2, 3, 0, 1, 2, 3],
        },
    )
    (world_dir / "world.json").write_text(json.dumps(info))
    (world_dir / "prompts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(world_dir / "prompts" / "p.png")

    def genie(*args):
        proc = subprocess.run(
            [sys.executable, "-m", "genie.cli", *args], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    out = genie(
        "rl",
        "train",
        "--world",
        str(world_dir),
        "--steps",
        "64",
        "--num-envs",
        "2",
        "--out",
        str(tmp_path / "run"),
    )
    assert out.strip().splitlines()[-1].startswith("ppo: ")
    result = json.loads(
        genie(
            "rl", "eval", "--policy", str(tmp_path / "run"), "--episodes", "2", "--max-steps", "30", "--json"
        )
    )
    assert result["episodes"] == 2 and result["env_id"] == "ALE/Breakout-v5"
    for key in ("policy_mean", "policy_std", "random_mean", "random_std"):
        assert isinstance(result[key], float)
